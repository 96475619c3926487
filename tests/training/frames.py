"""Tiny hand-made training frames for the training tests (no simulator, no DuckDB).

``feature_frame`` builds a frame with every catalog column in its feature-frame dtype, at weekly
observation dates, with a planted signal: the churn probability rises with days_since_last_event
and with risk_indicator_count, and falls with active_days_30d.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from features.catalog import load_catalog
from features.schemas import feature_frame_schema
from features.vocabulary import PRODUCT_TAGS


def weekly_dates(first: date, count: int, every_days: int = 7) -> list[pd.Timestamp]:
    """``count`` observation dates ``every_days`` apart, as naive midnight timestamps."""
    return [pd.Timestamp(first + timedelta(days=i * every_days)) for i in range(count)]


def _random_column(dtype: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if dtype == "float":
        return rng.gamma(2.0, 2.0, size)
    if dtype == "int":
        return rng.poisson(3.0, size)
    if dtype == "bool":
        return rng.random(size) < 0.3
    return rng.choice(sorted(PRODUCT_TAGS), size)


def feature_frame(
    customers: int, dates: list[pd.Timestamp], *, seed: int = 0, signal: float = 1.0
) -> pd.DataFrame:
    """A validated feature frame plus ``churned`` for ``customers`` learners at each date."""
    rng = np.random.default_rng(seed)
    size = customers * len(dates)
    columns: dict[str, object] = {
        "customer_id": [f"C{i:07d}" for i in range(customers)] * len(dates),
        "as_of": np.repeat(np.array(dates, dtype="datetime64[us]"), customers),
    }
    for spec in load_catalog().features:
        columns[spec.name] = _random_column(spec.dtype, size, rng)
    frame = pd.DataFrame(columns)
    frame["days_since_last_event"] = rng.exponential(6.0, size)
    frame["active_days_30d"] = rng.integers(0, 31, size)
    frame["risk_indicator_count"] = rng.integers(0, 8, size)
    logit = -1.5 + signal * (
        0.25 * frame["days_since_last_event"]
        - 0.08 * frame["active_days_30d"]
        + 0.3 * frame["risk_indicator_count"]
    )
    frame = feature_frame_schema().validate(frame)
    frame["churned"] = (rng.random(size) < 1 / (1 + np.exp(-logit))).astype("int8")
    return frame
