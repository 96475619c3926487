"""Tests for rules.decisions.codes_of: each value's position among categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rules.decisions import codes_of

CATEGORIES = ["P1", "P2", "P3", "P2"]  # a repeated category: the first position counts
VALUES = ["P2", "P1", None, "P9", "P2", "P3"]
EXPECTED = [1, 0, -1, -1, 1, 2]


@pytest.mark.parametrize(
    "values",
    [
        pd.Categorical(VALUES, categories=["P9", "P3", "P2", "P1"]),
        pd.Series(pd.Categorical(VALUES, categories=["P3", "P9", "P2", "P1"], ordered=True)),
        pd.Series(VALUES, dtype=object),
        pa.array(VALUES),
    ],
    ids=["categorical", "ordered-series", "object-series", "arrow"],
)
def test_each_value_is_coded_by_its_first_category_and_minus_one_when_absent_or_null(values):
    assert codes_of(values, CATEGORIES).tolist() == EXPECTED


def test_a_categorical_is_coded_by_its_categories_not_value_by_value(monkeypatch):
    # given a million-row categorical of three categories
    column = pd.Series(pd.Categorical.from_codes(np.arange(1_000_000) % 4 - 1, ["P3", "P1", "P2"]))
    looked_up = []
    original = pa.array

    def counted(values, *args, **kwargs):
        looked_up.append(len(values))
        return original(values, *args, **kwargs)

    monkeypatch.setattr(pa, "array", counted)
    # when
    codes = codes_of(column, ["P1", "P2", "P3"])
    # then only the categories were looked up, and the codes are the values' positions
    assert max(looked_up) == 3
    assert codes[:8].tolist() == [-1, 2, 0, 1, -1, 2, 0, 1]
