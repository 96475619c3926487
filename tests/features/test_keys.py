"""features.keys: repeated keys found without hashing when a day's ids are in order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.keys import (
    keys_in_order,
    repeated_ids,
    repeated_keys,
    repeats_any,
    strictly_increasing,
)

DAYS = np.array(["2026-03-01", "2026-03-02"], dtype="datetime64[us]")
ARROW_TEXT = pd.StringDtype("pyarrow", np.nan)


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (pd.Series(["C1", "C2", "C3"], dtype=ARROW_TEXT), True),
        (pd.Series(["C1", "C2", "C3"], dtype=object), True),
        (pd.Series(["C1", "C2", "C2"], dtype=ARROW_TEXT), False),  # in order, one repeat
        (pd.Series(["C2", "C1", "C3"], dtype=ARROW_TEXT), False),  # unique, out of order
        (pd.Series(["C1", None, "C3"], dtype=ARROW_TEXT), False),
        (pd.Series(["C1", "C2"], dtype="category"), True),  # compared by their texts
        (pd.Series(["C2", "C1"], dtype="category"), False),
        (pd.Series(["C1", 2], dtype=object), False),  # mixed objects
        (pd.Series([], dtype=ARROW_TEXT), True),
        (pd.Series(["C1"], dtype=ARROW_TEXT), True),
    ],
)
def test_ids_are_strictly_increasing_only_when_each_is_greater_than_the_one_before(ids, expected):
    assert strictly_increasing(ids) is expected


def test_a_day_in_id_order_has_its_keys_in_order_and_two_days_have_not():
    # given one day's learners in id order, and the same learners on two days
    one_day = pd.DataFrame({"customer_id": ["C1", "C2", "C3"], "as_of": DAYS[[1, 1, 1]]})
    two_days = one_day.assign(as_of=DAYS[[0, 1, 1]])
    # then only the first is known unique without hashing
    assert keys_in_order(one_day)
    assert not keys_in_order(two_days)


@given(
    st.lists(st.tuples(st.sampled_from(["C1", "C2", "C3", "C4"]), st.integers(0, 1)), max_size=8),
    st.booleans(),
)
def test_repeated_keys_are_the_rows_duplicated_finds(rows, in_id_order):
    # given any keys, in id order or as drawn
    rows = sorted(rows) if in_id_order else rows
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series([row[0] for row in rows], dtype=ARROW_TEXT),
            "as_of": DAYS[[row[1] for row in rows]] if rows else DAYS[:0],
        }
    )
    # when their repeats are found, then they are pandas' duplicated, every occurrence
    expected = frame.duplicated(keep=False)
    pd.testing.assert_series_equal(repeated_keys(frame), expected, check_names=False)
    ids = frame["customer_id"]
    pd.testing.assert_series_equal(repeated_ids(ids), ids.duplicated(), check_names=False)


@given(st.lists(st.sampled_from(["C1", "C2", "C3", "C4", None]), max_size=6))
def test_repeats_any_is_whether_some_value_null_included_occurs_twice(values):
    # given ids, some null, repeated or not; when checked, then the answer is a set's
    assert repeats_any(pa.array(values, pa.large_string())) is (len(set(values)) < len(values))
