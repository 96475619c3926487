"""Tests for rules.columns.Columns: a frame's columns taken out once, read as the frame reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rules.columns import Columns


def _mixed_frame() -> pd.DataFrame:
    """Two rows of every dtype the engine's inputs and outputs hold, nulls included."""
    return pd.DataFrame(
        {
            "customer_id": pd.array(["c1", None], dtype="str"),
            "as_of": pd.to_datetime(["2025-06-01", None]).as_unit("us"),
            "lessons_30d": np.array([3, 0], dtype=np.int64),
            "milestones_total": pd.array([2, None], dtype="Int64"),
            "p_churn": [0.25, np.nan],
            "risk_inactive_14d": [True, False],
            "over_capacity": pd.array([None, True], dtype="boolean"),
            "to_tag": pd.Categorical(["ST_004", None], categories=["ST_001", "ST_004"]),
            # read through a table of the categories: ordered, all set, and numeric ones too
            "priority": pd.Categorical(["P2", "P1"], categories=["P1", "P2"], ordered=True),
            "cohort": pd.Categorical([3, None], categories=[1, 3]),
            "week": pd.Categorical([1, 3], categories=[1, 3]),
        },
        index=[7, 3],  # an index that is not 0..n-1: the values are read by position
    )


def _same(actual: np.ndarray, expected: np.ndarray) -> bool:
    """Same dtype and values, nulls in the same places (an object NaN is not equal to itself)."""
    return actual.dtype == expected.dtype and pd.Series(actual).equals(pd.Series(expected))


def test_each_column_reads_as_the_frames_to_numpy_for_every_dtype():
    # given a frame holding every dtype the engine meets, with nulls
    frame = _mixed_frame()
    # when its columns are taken out once
    columns = Columns.of(frame)
    # then each reads as frame[name].to_numpy() does, with and without a dtype, in frame order
    assert columns.names() == list(frame.columns)
    for name in frame.columns:
        assert _same(columns[name], frame[name].to_numpy())
        assert _same(columns.to_numpy(name, object), frame[name].to_numpy(object))
        # and the stored array keeps the column's dtype
        assert columns.array(name).dtype == frame[name].dtype
    # and it reads like a frame: len is the row count, "in" asks for a column
    assert len(columns) == 2
    assert "p_churn" in columns
    assert "p_low" not in columns


def test_replaced_columns_and_the_frame_built_back_keep_values_and_dtypes():
    # given a frame's columns with one column replaced and one added
    frame = _mixed_frame()
    columns = Columns.of(frame).with_values(
        {"p_churn": np.array([0.5, 0.75]), "confidence": np.array([0.9, 0.1])}
    )
    # when built back into a frame
    rebuilt = columns.frame()
    # then the untouched columns are the frame's, the others the given values, in a new frame
    expected = frame.reset_index(drop=True).assign(p_churn=[0.5, 0.75], confidence=[0.9, 0.1])
    pd.testing.assert_frame_equal(rebuilt, expected)
    assert list(Columns.of(frame)["p_churn"][:1]) == [0.25]  # the original is not changed


def test_repeated_names_and_columns_of_another_length_are_refused():
    # given a frame that repeats a column name, and arrays of two lengths
    repeated = pd.DataFrame([[1, 2]], columns=["p_churn", "p_churn"])
    # when / then each is refused, naming what is wrong
    with pytest.raises(ValueError, match=r"repeated column names \['p_churn'\]"):
        Columns.of(repeated)
    with pytest.raises(ValueError, match="'mrr' has 1 values for 2 rows"):
        Columns({"p_churn": np.zeros(2), "mrr": np.zeros(1)}, rows=2)
