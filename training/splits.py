"""Time-based splits: train / calibration / test slices and expanding-window CV folds, all purged.

Every split here is by ``as_of`` date, never random across time. A row at ``as_of`` t carries a
label that looks at the window [t, t + W) (W = ``horizon_days``). The **purge rule** used by every
function in this module: a later slice (or a CV fold's validation block) starts at a date s only
when every row of the earlier slice satisfies ``as_of + W <= s``, i.e. the W-day label window of the
earlier slice's last date has closed before the later slice's first ``as_of``. The label windows of
two slices therefore never overlap, and no earlier label is computed from events that the later
slice is asked to predict. ``embargo_days`` widens that gap further when a caller wants the later
slice's 30-day feature windows to be disjoint from the earlier labels too (default 0).

Slices are sized by their share of rows (default 60 / 20 / 20) counted from the end of time: the
test slice takes the latest dates, the calibration slice the latest dates that respect the purge
before it, and the training slice everything purged before that. Rows between slices that fall in a
purge gap are not used by any slice; their count is reported on the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

AS_OF = "as_of"
LABEL = "churned"


@dataclass(frozen=True)
class TimeSlice:
    """One contiguous range of observation dates and the rows that belong to it."""

    name: str
    frame: pd.DataFrame
    first_as_of: pd.Timestamp
    last_as_of: pd.Timestamp

    @property
    def rows(self) -> int:
        """Number of rows in the slice."""
        return len(self.frame)

    @property
    def dates(self) -> int:
        """Number of distinct observation dates in the slice."""
        return int(self.frame[AS_OF].nunique())


@dataclass(frozen=True)
class TimeSplit:
    """Train, calibration and test slices, each later in time than the one before."""

    train: TimeSlice
    calibration: TimeSlice
    test: TimeSlice
    horizon_days: int
    embargo_days: int
    purged_rows: int

    def summary(self) -> dict[str, object]:
        """Flat description of the split (dates, rows, positive rates) for logging as params."""
        described: dict[str, object] = {
            "split.horizon_days": self.horizon_days,
            "split.embargo_days": self.embargo_days,
            "split.purged_rows": self.purged_rows,
        }
        for part in (self.train, self.calibration, self.test):
            described[f"split.{part.name}.first_as_of"] = part.first_as_of.date().isoformat()
            described[f"split.{part.name}.last_as_of"] = part.last_as_of.date().isoformat()
            described[f"split.{part.name}.rows"] = part.rows
            described[f"split.{part.name}.dates"] = part.dates
            if LABEL in part.frame:
                described[f"split.{part.name}.churn_rate"] = round(
                    float(part.frame[LABEL].mean()), 4
                )
        return described


@dataclass(frozen=True)
class CvFold:
    """One expanding-window fold: fit on every purged earlier date, validate on a later block."""

    fit_index: np.ndarray
    valid_index: np.ndarray
    valid_first_as_of: pd.Timestamp
    valid_last_as_of: pd.Timestamp


def _purge_limit(first_as_of: pd.Timestamp, horizon_days: int, embargo_days: int) -> pd.Timestamp:
    """Latest as_of an earlier slice may hold when the next slice starts at ``first_as_of``."""
    return first_as_of - timedelta(days=horizon_days + embargo_days)


def _rows_per_date(frame: pd.DataFrame) -> pd.Series:
    """Row count per distinct as_of, sorted by date; raises on a frame without as_of rows."""
    if AS_OF not in frame.columns:
        raise ValueError(f"training frame has no {AS_OF!r} column; columns: {list(frame.columns)}")
    if frame.empty:
        raise ValueError("training frame is empty: no (customer, as_of) rows to split")
    if frame[AS_OF].isna().any():
        raise ValueError(f"training frame: {int(frame[AS_OF].isna().sum())} rows have a null as_of")
    return frame.groupby(AS_OF, sort=True).size()


def _latest_dates_with_share(counts: pd.Series, rows_wanted: float) -> pd.Index:
    """The shortest run of latest dates of ``counts`` holding at least ``rows_wanted`` rows."""
    from_the_end = counts.iloc[::-1].cumsum()
    enough = from_the_end.index[from_the_end.to_numpy() >= rows_wanted]
    start = enough[0] if len(enough) else counts.index[0]
    return counts.index[counts.index >= start]


def _slice(frame: pd.DataFrame, name: str, dates: pd.Index) -> TimeSlice:
    part = frame.loc[frame[AS_OF].isin(dates)]
    return TimeSlice(name, part, pd.Timestamp(dates.min()), pd.Timestamp(dates.max()))


def _require_dates(name: str, dates: pd.Index, counts: pd.Series, horizon_days: int) -> None:
    if len(dates) == 0:
        span = f"{counts.index.min().date()}..{counts.index.max().date()}"
        raise ValueError(
            f"time split: no observation dates left for the {name} slice after purging "
            f"{horizon_days}-day label windows; the data covers as_of {span} "
            f"({len(counts)} dates, {int(counts.sum())} rows). Use a longer log, a shorter "
            "horizon or more frequent observation dates."
        )


def split_by_time(
    frame: pd.DataFrame,
    *,
    horizon_days: int,
    calibration_share: float = 0.2,
    test_share: float = 0.2,
    embargo_days: int = 0,
) -> TimeSplit:
    """Cut ``frame`` into purged train / calibration / test slices by ``as_of``.

    Args:
        frame: Rows with an ``as_of`` column (datetime64, midnight) and usually ``churned``.
        horizon_days: W, the label window length; the purge gap between slices.
        calibration_share: Share of all rows wanted in the calibration slice.
        test_share: Share of all rows wanted in the test slice (the latest dates).
        embargo_days: Extra days added to the purge gap (see the module docstring).

    Returns:
        The three slices; rows inside purge gaps belong to none and are counted in ``purged_rows``.

    Raises:
        ValueError: when a slice would be empty, naming the date range available.
    """
    if not (
        0 < calibration_share < 1 and 0 < test_share < 1 and calibration_share + test_share < 1
    ):
        raise ValueError(
            f"time split: shares must be in (0, 1) and sum below 1, got calibration="
            f"{calibration_share}, test={test_share}"
        )
    counts = _rows_per_date(frame)
    total = int(counts.sum())
    test_dates = _latest_dates_with_share(counts, test_share * total)
    before_test = counts[counts.index <= _purge_limit(test_dates.min(), horizon_days, embargo_days)]
    _require_dates("calibration", before_test.index, counts, horizon_days)
    cal_dates = _latest_dates_with_share(before_test, calibration_share * total)
    train_limit = _purge_limit(cal_dates.min(), horizon_days, embargo_days)
    train_dates = counts.index[counts.index <= train_limit]
    _require_dates("train", train_dates, counts, horizon_days)
    slices = [
        _slice(frame, name, dates)
        for name, dates in (
            ("train", train_dates),
            ("calibration", cal_dates),
            ("test", test_dates),
        )
    ]
    purged = total - sum(part.rows for part in slices)
    return TimeSplit(
        *slices, horizon_days=horizon_days, embargo_days=embargo_days, purged_rows=purged
    )


def expanding_folds(
    frame: pd.DataFrame,
    *,
    horizon_days: int,
    n_folds: int = 3,
    valid_share: float = 0.15,
    embargo_days: int = 0,
) -> list[CvFold]:
    """Expanding-window CV folds over ``frame``'s dates, purged like :func:`split_by_time`.

    The latest dates are cut into ``n_folds`` consecutive validation blocks of
    ``ceil(valid_share * dates)`` dates each; each fold fits on every date whose label window has
    closed before its block starts, so later folds fit on more history. Folds whose fit part would
    be empty or hold a single class are left out; at least one fold must remain.

    Returns:
        Folds in time order (earliest validation block first), as positional row indices into
        ``frame``.

    Raises:
        ValueError: when no fold has both a fit part with both classes and a validation block.
    """
    if n_folds < 1:
        raise ValueError(f"expanding folds: n_folds must be >= 1, got {n_folds}")
    counts = _rows_per_date(frame)
    dates = counts.index
    block = max(1, math.ceil(valid_share * len(dates)))
    as_of = frame[AS_OF].to_numpy()
    labels = frame[LABEL].to_numpy() if LABEL in frame else None
    folds: list[CvFold] = []
    for fold_number in range(n_folds, 0, -1):
        stop = len(dates) - (fold_number - 1) * block
        valid_dates = dates[max(0, stop - block) : stop]
        if len(valid_dates) == 0:
            continue
        limit = _purge_limit(valid_dates.min(), horizon_days, embargo_days)
        fit_index = np.flatnonzero(as_of <= limit.to_datetime64())
        valid_index = np.flatnonzero(np.isin(as_of, valid_dates.to_numpy()))
        if len(fit_index) == 0 or (labels is not None and np.unique(labels[fit_index]).size < 2):
            continue
        folds.append(CvFold(fit_index, valid_index, valid_dates.min(), valid_dates.max()))
    if not folds:
        raise ValueError(
            f"expanding folds: {len(dates)} dates ({dates.min().date()}..{dates.max().date()}) "
            f"leave no fold with {horizon_days} days of purge before a validation block of "
            f"{block} dates and both classes to fit on"
        )
    return folds
