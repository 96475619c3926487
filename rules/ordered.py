"""The rules engine's row order (``rules.decisions.decision_order``): its keys, and whether
rows are in it already."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from rules.codes import codes_of, one_array


def order_keys(
    priority_code: np.ndarray, value_at_risk: np.ndarray, p_churn: np.ndarray
) -> list[np.ndarray]:
    """``decision_order``'s numeric keys, the first first, ascending (none and NaN last)."""
    priority = np.where(priority_code < 0, np.iinfo(np.int64).max, priority_code)
    numbers = (np.asarray(value, float) for value in (value_at_risk, p_churn))
    return [priority, *(np.where(np.isnan(value), np.inf, -value) for value in numbers)]


def keys_in_order(keys: list[np.ndarray], customer_ids: ArrayLike) -> bool:
    """Whether rows are in ``decision_order`` already: each row before the next by its
    ``order_keys`` and, where those tie, by id (checked on neighbours).

    A few vectorised comparisons, where working the order out again sorted the rows (a million
    rows: ~0.14 s for the lexsort alone).
    """
    before = np.zeros(max(len(keys[0]) - 1, 0), bool)  # a row before the next, by its keys
    tied = np.ones_like(before)
    for key in keys:
        before |= tied & (key[:-1] < key[1:])
        tied &= key[:-1] == key[1:]
    if not (before | tied).all():
        return False
    rows = np.flatnonzero(tied)
    if not len(rows):
        return True
    ids = one_array(pa.array(customer_ids))
    less = pc.less(ids.take(pa.array(rows)), ids.take(pa.array(rows + 1)))
    return bool(pc.all(less.fill_null(False)).as_py())


def in_frame_order(decisions: pd.DataFrame, priority_order: Sequence[str]) -> bool:
    """Whether ``decisions``' rows are in ``rules.decisions.frame_order`` already
    (``keys_in_order`` of its priorities coded by ``priority_order``, value at risk, p_churn
    and ids)."""
    priority = codes_of(decisions["priority"], priority_order)
    value, p_churn = (decisions[name].to_numpy(float) for name in ("value_at_risk", "p_churn"))
    return keys_in_order(order_keys(priority, value, p_churn), decisions["customer_id"].array)
