"""Tests for rules.ordered: recognising rows already in the rules engine's order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.decisions import decision_order
from rules.ordered import keys_in_order, order_keys

# priority code (-1: none), value at risk, p_churn: few values, so that rows tie on every key
_ROW = st.tuples(
    st.sampled_from([0, 1, -1]),
    st.sampled_from([1.0, 3.0, float("nan")]),
    st.sampled_from([0.2, float("nan")]),
)


def _columns(rows: list[tuple[int, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    priority = np.array([row[0] for row in rows], dtype=np.int64)
    value, p_churn = (np.array([row[at] for row in rows], dtype=float) for at in (1, 2))
    return priority, value, p_churn


@given(st.lists(_ROW, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_rows_put_in_decision_order_are_recognised_as_in_it(rows, random):
    # given rows of distinct learners in any order
    priority, value, p_churn = _columns(rows)
    ids = np.array([f"L{i}" for i in random.sample(range(50), len(rows))], dtype=object)
    order = decision_order(priority, value, p_churn, ids)
    # when the rows are taken in that order
    keys = order_keys(priority[order], value[order], p_churn[order])
    # then they are in it, and ordering them again moves nothing
    assert keys_in_order(keys, ids[order])
    assert decision_order(priority[order], value[order], p_churn[order], ids[order]).tolist() == (
        list(range(len(rows)))
    )


@given(st.lists(_ROW, max_size=8), st.randoms(use_true_random=False))
def test_rows_are_in_order_exactly_when_a_plain_sort_would_not_move_them(rows, random):
    # given rows of distinct learners in any order, and their order by a plain sort of the keys
    priority, value, p_churn = _columns(rows)
    ids = [f"L{i}" for i in random.sample(range(50), len(rows))]
    keys = order_keys(priority, value, p_churn)
    by_sort = sorted(range(len(rows)), key=lambda row: (*(key[row] for key in keys), ids[row]))
    # when checked and ordered, then both agree with the plain sort
    assert keys_in_order(keys, ids) is (by_sort == list(range(len(rows))))
    assert decision_order(priority, value, p_churn, ids).tolist() == by_sort


def test_rows_out_of_order_only_by_their_ids_are_not_in_order():
    # given two learners tied on every key, the later id first
    keys = order_keys(np.array([0, 0]), np.array([2.0, 2.0]), np.array([0.5, 0.5]))
    # when checked, then the id decides: not in order
    assert not keys_in_order(keys, ["L2", "L1"])
    assert keys_in_order(keys, ["L1", "L2"])


def test_rows_in_order_are_not_sorted_again(monkeypatch):
    # given rows in decision order: P1 worth more first, then P1 worth less, then no priority
    priority, value, p_churn = np.array([0, 0, -1]), np.array([5.0, 1.0, 0.0]), np.full(3, 0.5)

    def no_sort(*_args, **_kwargs):
        raise AssertionError("sorted rows already in order")

    monkeypatch.setattr(np, "lexsort", no_sort)
    # when ordered, then their own order comes back without a sort
    assert decision_order(priority, value, p_churn, ["a", "b", "c"]).tolist() == [0, 1, 2]
    # and rows out of order still need the sort
    with pytest.raises(AssertionError, match="sorted rows"):
        decision_order(priority[::-1], value[::-1], p_churn, ["c", "b", "a"])
