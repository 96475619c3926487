"""The model-health page's figures: calibration over recent labelled days, and feature drift.

Pure functions over frames, days passed in, then the reads at the edge (the store's scores, the
event log's labels, the champion's training run):

- **Calibration**: on the batch days whose label window has closed (``day + W <= the log's
  end``, W the champion's label window, the KPIs' label definition: ``features.labels``: churned
  iff no event in ``[day, day + W)`` or a cancellation in it), the stored ``p_churn`` binned in ten
  equal-width bins against the observed churn rate, with each bin's count, and the Brier score
  ``mean((p - y)^2)``. Only the most recent ``RECENT_LABELLED_DAYS`` such days: calibration drifts,
  and a lead asks how the model is doing now.
- **Drift**: the PSI (``serving.app.drift.feature_drift``, the report's) of each of the
  champion's features between its training window and the latest day's stored feature snapshot.
  Training keeps no feature frame, so the window is represented by the features of its last
  observation day (``split.train.last_as_of`` of the champion's run), computed from the event log
  as training computed them (``features.windows.build_features``): the population the model
  learnt from most recently, not the earliest batch day the report compares with. Each side is a
  seeded sample of at most ``DRIFT_SAMPLE`` learners.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.labels import compute_labels
from serving.app.drift import feature_drift

RELIABILITY_BINS = 10
RECENT_LABELLED_DAYS = 7
"""How many of the latest labelled batch days the calibration pools."""
PSI_BANDS = (0.1, 0.25)
"""PSI below 0.1: stable; 0.1-0.25: a moderate shift to watch; above 0.25: a major shift."""
DRIFT_SAMPLE = 100_000
"""Learners per side the PSI compares at most: ten bins' shares of a seeded sample this size are
within a fraction of a percent of the population's, and the page's cold read stays seconds, not
minutes, at a million learners."""
CALIBRATION_SAMPLE = 200_000
"""Learner-days the calibration labels at most: ten reliability bins and a Brier score of a
seeded sample this size are within a fraction of a point of the whole days' (a bin of 20,000
learner-days has a standard error under 0.4 points), and labelling seven days of a million
learners from the event log cost ~15 s of every dashboard start."""
TRAIN_LAST_PARAM = "split.train.last_as_of"
TRAIN_FIRST_PARAM = "split.train.first_as_of"


def labelled_days(
    days: Sequence[date], log_end: date, horizon_days: int, recent: int = RECENT_LABELLED_DAYS
) -> list[date]:
    """The latest ``recent`` batch days whose ``horizon_days`` label window the log covers.

    Args:
        days: the completed batch days.
        log_end: the first day the log does not cover (the day after its last event's).
        horizon_days: W, the label window.
        recent: how many of the latest closed days to keep.
    """
    closed = sorted(day for day in days if day + timedelta(days=horizon_days) <= log_end)
    return closed[-recent:] if recent > 0 else []


def reliability(scored: pd.DataFrame, bins: int = RELIABILITY_BINS) -> pd.DataFrame:
    """Predicted against observed churn in ``bins`` equal-width bins of ``p_churn``.

    Args:
        scored: ``p_churn`` (in [0, 1]) and ``churned`` (0/1) per labelled learner-day.
        bins: how many bins split [0, 1]; p = 1 falls in the last.

    Returns:
        One row per bin: ``low``, ``high``, ``learners``, ``mean_p`` and ``observed`` (NaN in an
        empty bin).

    Raises:
        ValueError: a probability outside [0, 1] or a label other than 0/1 (counting them).
    """
    p = scored["p_churn"].to_numpy(dtype=float)
    y = scored["churned"].to_numpy(dtype=float)
    outside = int(((p < 0) | (p > 1) | np.isnan(p)).sum())
    if outside:
        raise ValueError(f"calibration: {outside} p_churn value(s) outside [0, 1] or missing")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("calibration: churned must be 0 or 1")
    index = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / count
        observed = np.bincount(index, weights=y, minlength=bins) / count
    edges = np.linspace(0.0, 1.0, bins + 1)
    return pd.DataFrame(
        {"low": edges[:-1], "high": edges[1:], "learners": count.astype("int64"),
         "mean_p": mean_p, "observed": observed}
    )  # fmt: skip


def brier_score(scored: pd.DataFrame) -> float:
    """``mean((p_churn - churned)^2)``; NaN without rows."""
    if scored.empty:
        return float("nan")
    p = scored["p_churn"].to_numpy(dtype=float)
    return float(np.mean((p - scored["churned"].to_numpy(dtype=float)) ** 2))


def psi_band(psi: float) -> str:
    """``stable``, ``moderate`` or ``major`` by ``PSI_BANDS``."""
    low, high = PSI_BANDS
    return "stable" if psi < low else "moderate" if psi <= high else "major"


# --- reads at the edge ----------------------------------------------------------------------------


def labelled_scores(
    scores: pd.DataFrame, events: Path | pd.DataFrame, horizon_days: int, log_end: date
) -> pd.DataFrame:
    """The stored ``p_churn`` of the given scores with each learner-day's churn label.

    Args:
        scores: stored scores (``as_of``, ``customer_id``, ``p_churn``) of labelled days; rows
            without a model score are left out.
        events: the event log (its parquet file: DuckDB reads only what the labels need).
        horizon_days: W.
        log_end: the first day the log does not cover.

    Returns:
        as_of, customer_id, p_churn, churned.
    """
    scored = scores.loc[scores["p_churn"].notna(), ["as_of", "customer_id", "p_churn"]]
    scored = scored.astype({"customer_id": str, "as_of": "datetime64[us]"})
    if scored.empty:
        return scored.assign(churned=pd.Series(dtype="int8"))
    source = str(events) if isinstance(events, Path) else events
    labels = compute_labels(
        source, scored[["customer_id", "as_of"]], horizon_days=horizon_days,
        observed_until=log_end,
    )  # fmt: skip
    if len(labels) == len(scored) and not labels.attrs.get("excluded_incomplete"):
        # Every pair labelled, in the spine's order (``compute_labels``' promise): the merge's
        # inner join would give these rows again, after hashing millions of (id, day) keys.
        return scored.reset_index(drop=True).assign(churned=labels["churned"].to_numpy())
    return scored.merge(labels, on=["customer_id", "as_of"], how="inner")


@dataclass(frozen=True)
class TrainingWindow:
    """The champion's training slice, from its run's parameters."""

    first_as_of: date
    last_as_of: date


def training_window(params: dict[str, str]) -> TrainingWindow | None:
    """The training slice's first and last observation days; None when the run lacks them."""
    if TRAIN_LAST_PARAM not in params or TRAIN_FIRST_PARAM not in params:
        return None
    return TrainingWindow(
        date.fromisoformat(params[TRAIN_FIRST_PARAM]), date.fromisoformat(params[TRAIN_LAST_PARAM])
    )


def sample_rows(frame: pd.DataFrame, size: int = DRIFT_SAMPLE, seed: int = 0) -> pd.DataFrame:
    """``frame`` when it has at most ``size`` rows, else a seeded sample of ``size`` of them."""
    return frame if len(frame) <= size else frame.sample(size, random_state=seed)


def drift_table(
    reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[str]
) -> pd.DataFrame:
    """``feature_drift`` of the features both frames have, with each one's ``band``."""
    shared = [name for name in features if name in reference and name in current]
    drift = feature_drift(reference, current, shared)
    return drift.assign(band=[psi_band(psi) for psi in drift["psi"]])


__all__ = [
    "CALIBRATION_SAMPLE",
    "DRIFT_SAMPLE",
    "PSI_BANDS",
    "RECENT_LABELLED_DAYS",
    "RELIABILITY_BINS",
    "TrainingWindow",
    "brier_score",
    "drift_table",
    "labelled_days",
    "labelled_scores",
    "psi_band",
    "reliability",
    "sample_rows",
    "training_window",
]
