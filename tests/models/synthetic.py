"""Synthetic feature frames with a planted churn signal, for the model tests.

``features.windows`` is written in parallel, so the model tests build frames straight from numpy:
every catalog column with its catalog dtype (float64, int64, bool, str), most of them noise, and a
churn probability that rises with days of inactivity, falls with active days and falls with the
activity trend (a steeper decline means more churn).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import load_catalog
from models.matrix import PRODUCT_TAG_CATEGORIES

AS_OF = np.datetime64("2025-03-01", "us")
TEST_PARAMS = {"num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 40, "num_threads": 1}
TEST_ROUNDS = 60


def true_churn_probability(frame: pd.DataFrame) -> np.ndarray:
    """The planted signal: the probability each synthetic learner churns."""
    logit = (
        -1.2
        + 0.12 * frame["days_since_last_event"].to_numpy()
        - 0.10 * frame["active_days_30d"].to_numpy()
        - 1.5 * frame["activity_trend_7v23"].to_numpy()
        + 0.4 * (frame["product_tag"] == "PT_003").to_numpy()
    )
    return 1.0 / (1.0 + np.exp(-logit))


def _noise_column(rng: np.random.Generator, dtype: str, rows: int) -> np.ndarray:
    if dtype == "float":
        values = rng.normal(10.0, 5.0, rows)
        values[rng.uniform(size=rows) < 0.05] = np.nan  # catalog floats may be null
        return values
    if dtype == "int":
        return rng.poisson(3.0, rows).astype(np.int64)
    if dtype == "bool":
        return rng.uniform(size=rows) < 0.3
    return rng.choice(np.array(PRODUCT_TAG_CATEGORIES), rows)


def make_feature_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A feature frame (customer_id, as_of, catalog columns) and its sampled 0/1 outcomes."""
    # The planted signal and the outcomes have their own stream, the noise columns another: a
    # catalog that grows adds noise columns without redrawing the learners or their outcomes.
    rng, noise = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))
    catalog = load_catalog()
    engagement = rng.uniform(size=rows)
    planted = {
        "days_since_last_event": np.round(rng.exponential(1.0 + 20.0 * (1.0 - engagement))),
        "active_days_30d": rng.binomial(30, 0.05 + 0.85 * engagement).astype(np.int64),
        "activity_trend_7v23": np.clip(rng.normal(0.0, 0.5, rows), -1.0, 1.0),
    }
    columns = {
        "customer_id": np.array([f"C{seed:02d}{i:07d}" for i in range(rows)]),
        "as_of": np.full(rows, AS_OF),
    }
    for spec in catalog.features:
        if spec.name in planted:
            columns[spec.name] = planted[spec.name]
        else:
            columns[spec.name] = _noise_column(noise, spec.dtype, rows)
    frame = pd.DataFrame(columns)
    outcomes = (rng.uniform(size=rows) < true_churn_probability(frame)).astype(np.int64)
    return frame, outcomes
