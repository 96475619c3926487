"""Training sets: eligible (customer, as_of) rows at observation dates, with features and labels.

Two ways to get the rows (DESIGN §4, issue 3 item 1):

- **computed labels** (the default): observation dates every ``every_days`` days, from the first day
  whose 30-day feature window lies wholly inside the log (``log_start + 30d``) to the last day whose
  W-day label window closes by ``observed_until``. At each date every *eligible* learner is a row
  (``features.windows.build_features(as_of=...)``) and its label comes from
  ``features.labels.compute_labels``, which leaves out rows whose label window is incomplete;
  the dates are chosen so that none should be, and any that are anyway are counted, never
  dropped quietly.
- **bring-your-own labels**: the labels file's (customer_id, as_of) rows ARE the rows; features
  are computed for exactly those pairs (``spine=``). Rows whose label window runs past the end of
  the event log are kept (the labels file is the authority on its labels) and counted in
  ``labels_beyond_log``.

``observed_until`` is the instant up to which the event log is complete: by default the UTC midnight
after the last event (the same default as ``features.labels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import pandas as pd
import pandera.pandas as pa

from features.labels import compute_labels
from features.schemas import feature_frame_schema
from features.windows import build_features, observation_dates

KEYS = ["customer_id", "as_of"]
LABEL = "churned"
FEATURE_WINDOW_DAYS = 30
"""Days of the feature window: the first observation date is this long after the log starts."""


def training_frame_schema() -> pa.DataFrameSchema:
    """The catalog's feature-frame schema plus the 0/1 ``churned`` label (strict, coercing)."""
    features = feature_frame_schema()
    label = pa.Column("int8", pa.Check.isin([0, 1]), nullable=False, coerce=True)
    return features.add_columns({LABEL: label})


@dataclass(frozen=True)
class TrainingSet:
    """Feature rows with labels, and where in time they came from."""

    frame: pd.DataFrame
    """customer_id, as_of, the catalog features, churned; sorted by (as_of, customer_id)."""
    horizon_days: int
    every_days: int | None
    """Observation cadence; None when the rows came from a labels file."""
    log_start: pd.Timestamp
    """UTC midnight of the first event's day (naive, like as_of)."""
    observed_until: pd.Timestamp
    """The instant up to which the event log is complete (naive UTC midnight)."""
    label_source: Literal["computed", "labels file"]
    incomplete_excluded: int
    """Rows left out because their label window was incomplete (computed labels only)."""
    labels_beyond_log: int
    """Labels-file rows whose label window runs past observed_until (kept, see module docstring)."""

    def summary(self) -> dict[str, object]:
        """Flat description for MLflow params and the model card."""
        as_of = self.frame["as_of"]
        return {
            "data.log_start": self.log_start.date().isoformat(),
            "data.observed_until": self.observed_until.date().isoformat(),
            "data.first_as_of": as_of.min().date().isoformat(),
            "data.last_as_of": as_of.max().date().isoformat(),
            "data.rows": len(self.frame),
            "data.customers": int(self.frame["customer_id"].nunique()),
            "data.dates": int(as_of.nunique()),
            "data.churn_rate": round(float(self.frame[LABEL].mean()), 4),
            "data.label_source": self.label_source,
            "data.horizon_days": self.horizon_days,
            "data.every_days": self.every_days if self.every_days is not None else "labels file",
            "data.incomplete_excluded": self.incomplete_excluded,
            "data.labels_beyond_log": self.labels_beyond_log,
        }


def log_window(events: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return (UTC midnight of the first event's day, UTC midnight after the last event), naive.

    Raises:
        ValueError: when the event log is empty.
    """
    if events.empty:
        raise ValueError("events: the log is empty, there is nothing to learn from")
    ts = pd.to_datetime(events["ts"], utc=True).dt.tz_localize(None)
    return ts.min().floor("D"), ts.max().floor("D") + pd.Timedelta(days=1)


def training_dates(
    log_start: pd.Timestamp, observed_until: pd.Timestamp, *, horizon_days: int, every_days: int
) -> list[date]:
    """Observation dates with a full feature window behind them and a complete label window ahead.

    Raises:
        ValueError: when the log is too short for a single such date.
    """
    first = (log_start + pd.Timedelta(days=FEATURE_WINDOW_DAYS)).date()
    last = (observed_until - pd.Timedelta(days=horizon_days)).date()
    if last < first:
        raise ValueError(
            f"events: the log covers {log_start.date()}..{observed_until.date()}, too short for "
            f"{FEATURE_WINDOW_DAYS} days of features plus a {horizon_days}-day label window"
        )
    return observation_dates(first, last, every_days)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in time order, then by learner (a stable order whatever the builder returned)."""
    return frame.sort_values(["as_of", "customer_id"], kind="mergesort").reset_index(drop=True)


def _join_labels(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Inner-join features and labels on (customer_id, as_of), one to one."""
    label_part = labels[[*KEYS, LABEL]]
    joined = features.merge(label_part, on=KEYS, how="inner", validate="one_to_one")
    return _sorted(training_frame_schema().validate(joined))


def build_training_set(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    labels: pd.DataFrame | None = None,
    horizon_days: int = 30,
    every_days: int = 7,
    observed_until: pd.Timestamp | None = None,
) -> TrainingSet:
    """Build the rows to learn from (see the module docstring for the two modes).

    Args:
        events: Validated events (DESIGN §3), ts tz-aware UTC.
        customers: Validated customers.
        labels: Optional bring-your-own labels (customer_id, as_of, churned), already validated.
        horizon_days: W, the label window.
        every_days: Days between observation dates (computed labels only).
        observed_until: Instant the log is complete up to; default: midnight after the last event.

    Raises:
        ValueError: when the log is too short, or when the feature builder did not return a row
            for every labels-file row.
    """
    log_start, log_end = log_window(events)
    observed_until = observed_until if observed_until is not None else log_end
    if labels is None:
        return _computed_training_set(
            events, customers, log_start, observed_until, horizon_days, every_days
        )
    return _labels_file_training_set(
        events, customers, labels, log_start, observed_until, horizon_days
    )


def _computed_training_set(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    log_start: pd.Timestamp,
    observed_until: pd.Timestamp,
    horizon_days: int,
    every_days: int,
) -> TrainingSet:
    dates = training_dates(
        log_start, observed_until, horizon_days=horizon_days, every_days=every_days
    )
    features = build_features(events, customers, as_of=dates)
    labels = compute_labels(
        events, features[KEYS], horizon_days=horizon_days, observed_until=observed_until
    )
    frame = _join_labels(features, labels)
    excluded = int(labels.attrs.get("excluded_incomplete", 0))
    if len(features) - len(frame) != excluded:
        raise ValueError(
            f"training set: {len(features)} feature rows but {len(frame)} labelled rows, and the "
            f"labeller excluded {excluded} for incomplete windows; the rest have no label"
        )
    return TrainingSet(
        frame=frame,
        horizon_days=horizon_days,
        every_days=every_days,
        log_start=log_start,
        observed_until=observed_until,
        label_source="computed",
        incomplete_excluded=excluded,
        labels_beyond_log=0,
    )


def _labels_file_training_set(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    labels: pd.DataFrame,
    log_start: pd.Timestamp,
    observed_until: pd.Timestamp,
    horizon_days: int,
) -> TrainingSet:
    spine = labels[KEYS].copy()
    features = build_features(events, customers, spine=spine)
    frame = _join_labels(features, labels)
    if len(frame) != len(labels):
        raise ValueError(
            f"labels file: {len(labels)} rows but features could be built for only {len(frame)}; "
            "check that every labelled customer_id is in the customers file"
        )
    window_end = frame["as_of"] + pd.Timedelta(days=horizon_days)
    return TrainingSet(
        frame=frame,
        horizon_days=horizon_days,
        every_days=None,
        log_start=log_start,
        observed_until=observed_until,
        label_source="labels file",
        incomplete_excluded=0,
        labels_beyond_log=int((window_end > observed_until).sum()),
    )
