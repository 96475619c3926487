"""Time splits: purged slices in time order, and purged expanding CV folds."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.splits import expanding_folds, split_by_time


def _frame(dates: list[pd.Timestamp], rows_per_date: list[int], churn_every: int = 3):
    """Keys and a label only: splitting never looks at the features."""
    as_of = np.repeat(np.array(dates, dtype="datetime64[us]"), rows_per_date)
    index = np.arange(len(as_of))
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in index],
            "as_of": as_of,
            "churned": (index % churn_every == 0).astype("int8"),
        }
    )


def _weekly(count: int, every_days: int = 7) -> list[pd.Timestamp]:
    return [pd.Timestamp(date(2026, 1, 31) + timedelta(days=i * every_days)) for i in range(count)]


@settings(max_examples=40, deadline=None)
@given(
    dates=st.integers(min_value=14, max_value=40),
    every_days=st.integers(min_value=1, max_value=10),
    horizon_days=st.integers(min_value=7, max_value=35),
    rows=st.lists(st.integers(min_value=1, max_value=30), min_size=40, max_size=40),
)
def test_slices_are_ordered_disjoint_and_purged(dates, every_days, horizon_days, rows):
    # given a frame whose date range is long enough for three purged slices
    span_days = (dates - 1) * every_days
    if span_days < 3 * horizon_days + 3 * every_days:
        return
    frame = _frame(_weekly(dates, every_days), rows[:dates])

    # when it is split (rows skewed to the latest dates can leave a slice no date once purged:
    # then the split refuses, naming the slice, which is its documented answer)
    try:
        split = split_by_time(frame, horizon_days=horizon_days)
    except ValueError as refused:
        assert "no observation dates left for the" in str(refused)
        return

    # then each slice's label windows close before the next slice's first as_of
    gap = pd.Timedelta(days=horizon_days)
    assert split.train.frame["as_of"].max() + gap <= split.calibration.frame["as_of"].min()
    assert split.calibration.frame["as_of"].max() + gap <= split.test.frame["as_of"].min()
    # and no row is in two slices, and every row is either in a slice or counted as purged
    ids = [set(part.frame["customer_id"]) for part in (split.train, split.calibration, split.test)]
    assert not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    assert sum(len(part) for part in ids) + split.purged_rows == len(frame)


def test_test_slice_holds_the_latest_dates_and_its_share_of_rows():
    # given 30 weekly dates of 100 rows each
    frame = _frame(_weekly(30), [100] * 30)

    # when it is split with 20% test and 20% calibration
    split = split_by_time(frame, horizon_days=30, test_share=0.2, calibration_share=0.2)

    # then the test slice is the last 6 dates, calibration the 6 before the 30-day purge
    assert split.test.dates == 6
    assert split.test.last_as_of == frame["as_of"].max()
    assert split.calibration.dates == 6
    assert split.calibration.last_as_of + pd.Timedelta(days=35) == split.test.first_as_of
    assert split.train.dates == 30 - 6 - 4 - 6 - 4


def test_embargo_widens_the_gap_between_slices():
    # given the same frame split with and without a 14-day embargo
    frame = _frame(_weekly(40), [50] * 40)
    plain = split_by_time(frame, horizon_days=30)
    embargoed = split_by_time(frame, horizon_days=30, embargo_days=14)

    # then the embargoed calibration slice ends at least 44 days before the test slice
    gap = embargoed.test.first_as_of - embargoed.calibration.last_as_of
    assert gap >= pd.Timedelta(days=44)
    assert embargoed.purged_rows > plain.purged_rows


def test_a_log_too_short_for_three_purged_slices_is_a_clear_error():
    # given 8 weekly dates (49 days) and a 30-day horizon
    frame = _frame(_weekly(8), [20] * 8)

    # when / then the error names the slice and the dates available
    with pytest.raises(ValueError, match=r"no observation dates left for the \w+ slice.*8 dates"):
        split_by_time(frame, horizon_days=30)


def test_split_summary_reports_rows_dates_and_churn_rate():
    # given a split
    split = split_by_time(_frame(_weekly(30), [10] * 30, churn_every=4), horizon_days=30)

    # when summarised
    summary = split.summary()

    # then the figures match the slices
    assert summary["split.test.rows"] == split.test.rows
    assert summary["split.train.first_as_of"] == "2026-01-31"
    assert summary["split.test.churn_rate"] == pytest.approx(
        split.test.frame["churned"].mean(), 1e-3
    )


def test_expanding_folds_are_purged_and_expand():
    # given 20 weekly dates
    frame = _frame(_weekly(20), [30] * 20)

    # when cut into 3 folds
    folds = expanding_folds(frame, horizon_days=30, n_folds=3)

    # then every fold fits only on dates whose label window closed before its validation block
    as_of = frame["as_of"]
    for fold in folds:
        assert as_of.iloc[fold.fit_index].max() + pd.Timedelta(days=30) <= fold.valid_first_as_of
        assert set(as_of.iloc[fold.valid_index]) <= {*as_of[as_of >= fold.valid_first_as_of]}
    # and the folds move forward in time with ever more history
    assert [f.valid_first_as_of for f in folds] == sorted(f.valid_first_as_of for f in folds)
    fit_sizes = [len(f.fit_index) for f in folds]
    assert fit_sizes == sorted(fit_sizes) and fit_sizes[0] < fit_sizes[-1]
    assert folds[-1].valid_last_as_of == as_of.max()


def test_folds_without_both_classes_to_fit_on_are_left_out():
    # given a frame whose first dates hold no churner
    frame = _frame(_weekly(20), [30] * 20)
    frame.loc[frame["as_of"] < _weekly(20)[8], "churned"] = 0

    # when cut into folds
    folds = expanding_folds(frame, horizon_days=30, n_folds=3)

    # then every remaining fold has both classes in its fit part
    assert folds
    for fold in folds:
        assert frame["churned"].iloc[fold.fit_index].nunique() == 2


def test_no_possible_fold_is_a_clear_error():
    # given 4 weekly dates: a 30-day purge leaves nothing to fit on
    frame = _frame(_weekly(4), [30] * 4)

    # when / then
    with pytest.raises(ValueError, match="leave no fold"):
        expanding_folds(frame, horizon_days=30)
