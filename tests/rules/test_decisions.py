"""Tests for rules.decisions.codes_of: each value's position among categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rules import decisions
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


def test_few_values_among_many_categories_are_coded_as_a_plain_lookup_codes_them():
    # given many categories (repeats, a null, an empty text) and far fewer values (repeats,
    # absent ones, a null, an empty text), enough to turn the lookup round
    rng = np.random.default_rng(3)
    size = decisions.INVERTED_FROM * 2
    categories = pa.array([f"C{i}" for i in rng.integers(0, size, size)] + ["", None])
    values = pa.array(
        [f"C{i}" for i in rng.integers(0, 2 * size, size // 5)] + [None, "C1", "C1", "", "x"]
    )
    # when coded
    codes = codes_of(values, categories)
    # then each is the first position Arrow's lookup of the values among the categories gives
    plain = pc.fill_null(pc.index_in(values, value_set=categories), -1).to_numpy()
    assert np.array_equal(codes, plain)
    assert (codes >= 0).sum() > size // 20  # not a vacuous agreement on "absent"


def test_few_values_among_many_categories_hash_the_values_not_the_categories(monkeypatch):
    # given few values among many categories, and Arrow's lookup recorded
    categories = pa.array([f"C{i}" for i in range(decisions.INVERTED_FROM)])
    values = pa.array(["C7", "C3", "nope"])
    hashed = []
    original = pc.index_in

    def recorded(probed, value_set):
        hashed.append(len(value_set))
        return original(probed, value_set=value_set)

    monkeypatch.setattr(pc, "index_in", recorded)
    # when coded, then no hash table of the many categories was built
    assert codes_of(values, categories).tolist() == [7, 3, -1]
    assert max(hashed) == len(values)
