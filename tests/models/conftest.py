"""Model-test fixtures: models fitted on a synthetic population, shared by the session."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest

from models.calibration import VennAbersCalibration
from models.churn import ChurnModel
from tests.models.synthetic import TEST_PARAMS, TEST_ROUNDS, make_feature_frame

OVERFIT_PARAMS = {"num_leaves": 63, "learning_rate": 0.3, "min_data_in_leaf": 5, "num_threads": 1}
OVERFIT_ROUNDS = 150
THIN_SLICES = 10
THIN_ROWS = 200
THIN_TEST_ROWS = 5_000


@dataclass(frozen=True)
class FittedPopulation:
    """A model fitted on a synthetic population, with its untouched test slice."""

    model: ChurnModel
    test_frame: pd.DataFrame
    test_outcomes: np.ndarray


@dataclass(frozen=True)
class PooledPredictions:
    """Predictions of new learners, pooled over several calibrations of one booster."""

    predictions: pd.DataFrame
    outcomes: np.ndarray


@pytest.fixture(scope="session")
def population() -> tuple[pd.DataFrame, np.ndarray]:
    """40k synthetic learners: 20k to train, the next 10k to calibrate, the last 10k to test."""
    return make_feature_frame(40_000, seed=1)


def _fit(population: tuple[pd.DataFrame, np.ndarray], params: dict, rounds: int):
    frame, outcomes = population
    train, cal, test = slice(0, 20_000), slice(20_000, 30_000), slice(30_000, 40_000)
    model = ChurnModel.fit(
        frame.iloc[train],
        outcomes[train],
        frame.iloc[cal],
        outcomes[cal],
        params=params,
        num_boost_round=rounds,
        seed=3,
    )
    return FittedPopulation(model, frame.iloc[test], outcomes[test])


@pytest.fixture(scope="session")
def fitted(population) -> FittedPopulation:
    """The model the tests use, with the small test parameters."""
    return _fit(population, TEST_PARAMS, TEST_ROUNDS)


@pytest.fixture(scope="session")
def overconfident(population) -> FittedPopulation:
    """A deliberately overfit booster (big leaves, fast rate): its raw scores are overconfident.

    Where the booster is nearly calibrated already, as ``fitted``'s is, no test can tell
    calibrated output from raw scores; this one can.
    """
    return _fit(population, OVERFIT_PARAMS, OVERFIT_ROUNDS)


@pytest.fixture(scope="session")
def thinly_calibrated(fitted) -> PooledPredictions:
    """``fitted``'s booster calibrated on ten thin slices of 200 new learners, each then tested.

    Thin slices give wide Venn-Abers intervals, so a pessimistic and an optimistic reading of them
    differ by more than the measuring error; Venn-Abers validity holds in expectation over
    calibration slices, so the decisions of ten of them are pooled.
    """
    predictions, outcomes = [], []
    for index in range(THIN_SLICES):
        frame, churned = make_feature_frame(THIN_ROWS + THIN_TEST_ROWS, seed=100 + index)
        raw = fitted.model.raw_probability(frame.iloc[:THIN_ROWS])
        calibrator = VennAbersCalibration.fit(raw, churned[:THIN_ROWS])
        model = replace(fitted.model, calibrator=calibrator)
        predictions.append(model.predict(frame.iloc[THIN_ROWS:]))
        outcomes.append(churned[THIN_ROWS:])
    return PooledPredictions(pd.concat(predictions, ignore_index=True), np.concatenate(outcomes))
