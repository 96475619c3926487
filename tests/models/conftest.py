"""Model-test fixtures: one model fitted on a synthetic population, shared by the session."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from models.churn import ChurnModel
from tests.models.synthetic import TEST_PARAMS, TEST_ROUNDS, make_feature_frame


@dataclass(frozen=True)
class FittedPopulation:
    """A model fitted on a synthetic population, with its untouched test slice."""

    model: ChurnModel
    test_frame: pd.DataFrame
    test_outcomes: np.ndarray


@pytest.fixture(scope="session")
def fitted() -> FittedPopulation:
    """40k synthetic learners: 20k to train, the next 10k to calibrate, the last 10k to test."""
    frame, outcomes = make_feature_frame(40_000, seed=1)
    train, cal, test = slice(0, 20_000), slice(20_000, 30_000), slice(30_000, 40_000)
    model = ChurnModel.fit(
        frame.iloc[train],
        outcomes[train],
        frame.iloc[cal],
        outcomes[cal],
        params=TEST_PARAMS,
        num_boost_round=TEST_ROUNDS,
        seed=3,
    )
    return FittedPopulation(model, frame.iloc[test], outcomes[test])
