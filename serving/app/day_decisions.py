"""A whole day's decisions from decisions made in parts: the capacity cut over all of them.

``rules.decide`` is row-wise: a learner's decision before the day's capacity cut is a function
of their own features, scores and stored state row and of ``as_of`` alone. Only the cut
(``rules.cut_to_capacity``) reads the whole day. Two callers lean on that:

- the Spark engine decides each partition alone and cuts the collected day on the driver
  (``whole_day_decisions``);
- the batch's answers (``answers_decisions``) must decide every learner again on the state the
  day left. A learner whose stored state the commit did not change gets the same decision as in
  the day's first decide, unless the cut rewrote it (over capacity: its own priority, action,
  control draw and campaign are gone). So only the learners whose state changed and those the
  cut moved are decided again, and the cut runs over the combined day: row for row what
  ``decide_learners(..., whole_day=True)`` gives on the state after the commit
  (``tests/serving/app/test_day_decisions.py`` compares them over simulated days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from rules import OVER_CAPACITY, RuleSet, cut_to_capacity
from rules.engine import codes_of, decision_order
from serving.core.assess import decide_learners
from serving.core.frames import is_in


@dataclass(frozen=True)
class DecidedDay:
    """The day's first decide, which the answers may reuse.

    Attributes:
        state: the stored state the day was decided on (the state before the day).
        decisions: the day's decisions on it, the capacity cut applied (``over_capacity`` set).
    """

    state: pd.DataFrame
    decisions: pd.DataFrame


def whole_day_decisions(
    ruleset: RuleSet, decisions: pd.DataFrame, features: pd.DataFrame
) -> pd.DataFrame:
    """The day's capacity cut over every (uncut) decision, in ``rules.decide``'s order."""
    priority = codes_of(decisions["priority"].astype(object), ruleset.interventions.priority_order)
    value, p_churn = (decisions[name].to_numpy(float) for name in ("value_at_risk", "p_churn"))
    order = decision_order(priority, value, p_churn, decisions["customer_id"].array)
    ordered = decisions.take(order).reset_index(drop=True)
    products = features.set_index("customer_id")["product_tag"]
    cut = cut_to_capacity(ruleset, ordered, product_tags=products)
    cut[OVER_CAPACITY] = cut[OVER_CAPACITY].astype("boolean")
    return cut


def answers_decisions(
    features: pd.DataFrame,
    scores: pd.DataFrame,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    decided: DecidedDay | None = None,
) -> pd.DataFrame:
    """Every learner of ``features`` decided on ``state``, the day's capacity applied.

    Equal to ``decide_learners(features, scores, ruleset, state, as_of, whole_day=True)``; with
    the day's first decide (``decided``), only the learners it cannot answer for are decided.

    Args:
        features: the day's learners (every one: the capacity is the day's).
        scores: their scores, row for row with ``features``.
        ruleset: the rules of the first decide too.
        state: the stored state to decide on (the state the day left).
        as_of: the day.
        decided: the day's first decide on another state; None decides everyone.
    """
    if decided is None or not _same_columns(decided.state, state):
        return decide_learners(features, scores, ruleset, state, as_of, whole_day=True)
    ids = features["customer_id"].array
    reused = codes_of(ids, decided.decisions["customer_id"].array)
    redo = reused < 0  # a learner the first decide did not see
    over = decided.decisions[OVER_CAPACITY].to_numpy(dtype=bool, na_value=True)
    redo |= over[np.where(redo, 0, reused)]
    redo |= changed_states(ids, decided.state, state)
    rows = np.flatnonzero(redo)
    again = features.iloc[rows].reset_index(drop=True)
    fresh = decide_learners(
        again, scores.iloc[rows].reset_index(drop=True), ruleset,
        state[is_in(state["customer_id"], again["customer_id"])], as_of,
    ).drop(columns=OVER_CAPACITY)  # fmt: skip
    kept = decided.decisions.iloc[reused[~redo]].drop(columns=OVER_CAPACITY)
    kept = _typed_as(kept, fresh)
    if kept is None:  # a value the fresh dtypes cannot hold: decide everyone instead
        return decide_learners(features, scores, ruleset, state, as_of, whole_day=True)
    combined = pd.concat([kept, fresh], ignore_index=True)
    return whole_day_decisions(ruleset, combined, features)


def changed_states(ids: pd.api.extensions.ExtensionArray, before: pd.DataFrame,
                   after: pd.DataFrame) -> np.ndarray:  # fmt: skip
    """Which learners' stored state row differs between two state frames (aligned with ``ids``).

    A learner in one frame only has changed; in neither, not. Missing values equal each other.
    """
    in_before = codes_of(ids, before["customer_id"].array)
    in_after = codes_of(ids, after["customer_id"].array)
    changed = (in_before < 0) != (in_after < 0)
    both = (in_before >= 0) & (in_after >= 0)
    rows_before, rows_after = in_before[both], in_after[both]
    differs = np.zeros(int(both.sum()), bool)
    for name in before.columns.drop("customer_id"):
        differs |= ~_equal(before[name].iloc[rows_before], after[name].iloc[rows_after])
    changed[both] |= differs
    return changed


def _equal(left: pd.Series, right: pd.Series) -> np.ndarray:
    """Element-wise equality, missing equal to missing (dates compared as instants)."""
    left_missing, right_missing = left.isna().to_numpy(), right.isna().to_numpy()
    if left.dtype.kind == "M" or right.dtype.kind == "M":
        values = [pd.to_datetime(side).to_numpy("datetime64[ns]") for side in (left, right)]
    else:
        values = [side.to_numpy(object) for side in (left, right)]
    same = values[0] == values[1]
    return np.where(left_missing | right_missing, left_missing & right_missing, same)


def _same_columns(before: pd.DataFrame, after: pd.DataFrame) -> bool:
    """Both states hold the same columns (a rebuilt state may lack the override's kind)."""
    return set(before.columns) == set(after.columns) and "customer_id" in before.columns


def _typed_as(kept: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame | None:
    """``kept`` with ``fresh``'s dtypes (the cut adds action categories), None if a value is lost.

    The rows of ``kept`` are not over capacity: their values are the rules' own, which the
    fresh decisions' categories (the ruleset's) hold.
    """
    if list(kept.columns) != list(fresh.columns):
        return None
    retyped = {}
    for name in kept.columns:
        wanted = fresh[name].dtype
        if kept[name].dtype != wanted:
            retyped[name] = kept[name].astype(wanted)
            if int(retyped[name].isna().sum()) != int(kept[name].isna().sum()):
                return None
    return kept.assign(**retyped) if retyped else kept


__all__ = ["DecidedDay", "answers_decisions", "changed_states", "whole_day_decisions"]
