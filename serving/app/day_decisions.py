"""A whole day's decisions from decisions made in parts: the capacity cut over all of them.

``rules.decide`` is row-wise: a learner's decision before the day's capacity cut is a function
of their own features, scores and stored state row and of ``as_of`` alone. Only the cut
(``rules.cut_to_capacity``) reads the whole day. Two callers lean on that:

- the Spark engine decides each partition alone and cuts the collected day on the driver
  (``cut_day``, as the embedded engine cuts its day);
- the batch's answers (``answers_decisions``) must decide every learner again on the state the
  day left. A learner whose stored state the commit did not change gets the same decision
  before the cut as in the day's first decide. The cut rewrites the learners it moves (their
  own priority, action, control draw and campaign, ``rules.CUT_COLUMNS``), so the batch cuts
  its day with ``cut_day``, which keeps what the rules had decided for them
  (``DecidedDay.uncut``): only the learners whose state changed are decided again, and the cut
  runs over the combined day, taking the first cut's overflow rows of the unchanged learners
  it moves again: row for row what ``decide_learners(..., whole_day=True)`` gives on the state
  after the commit (``tests/serving/app/test_day_decisions.py`` compares them over simulated
  days). Both engines keep ``uncut``; without it (a ``DecidedDay`` built from the committed
  decisions alone), the learners the cut moved are decided again too, unless none of its
  callers changed (``overflow_stays``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rules import OVER_CAPACITY, RuleSet
from rules.capacity import CUT_COLUMNS, cut_whole_day, rows_set
from rules.codes import NO_CODE, codes_of, one_array
from rules.decisions import in_decision_order
from serving.core.assess import decide_learners
from serving.core.frames import is_in


@dataclass(frozen=True)
class DecidedDay:
    """The day's first decide, which the answers may reuse.

    Attributes:
        state: the stored state the day was decided on (the state before the day).
        decisions: the day's decisions on it, the capacity cut applied (``over_capacity`` set).
        uncut: for each learner the cut moved, the rules' own values of the columns the cut
            rewrote (``customer_id`` and ``rules.CUT_COLUMNS``), as ``cut_day`` keeps them;
            None: not kept (the answers decide those learners again).
    """

    state: pd.DataFrame
    decisions: pd.DataFrame
    uncut: pd.DataFrame | None = None


def cut_day(
    ruleset: RuleSet, state: pd.DataFrame, decisions: pd.DataFrame, features: pd.DataFrame
) -> DecidedDay:
    """The day's capacity cut over its uncut ``decisions``, keeping what the cut overwrote.

    Args:
        ruleset: the rules the decisions were made with.
        state: the stored state they were decided on.
        decisions: ``decide_learners(..., whole_day=False)`` of every learner of the day.
        features: those learners' features (their product tiers match the overflow's campaign).

    Returns:
        ``decisions`` cut (``whole_day_decisions``: what ``whole_day=True`` gives), with the
        moved learners' own values of ``rules.CUT_COLUMNS`` beside them (``uncut``).
    """
    cut = whole_day_decisions(ruleset, decisions, features)
    moved = cut.loc[cut[OVER_CAPACITY].to_numpy(bool), "customer_id"]
    rows = codes_of(moved.array, decisions["customer_id"].array)
    kept = ["customer_id", *(name for name in CUT_COLUMNS if name in decisions)]
    return DecidedDay(state, cut, decisions[kept].take(rows).reset_index(drop=True))


def whole_day_decisions(
    ruleset: RuleSet,
    decisions: pd.DataFrame,
    features: pd.DataFrame,
    moved_before: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The day's capacity cut over every (uncut) decision, in ``rules.decide``'s order
    (``moved_before``: an earlier cut's overflow rows of unchanged learners, as
    ``rules.cut_to_capacity`` takes them)."""
    ordered = in_decision_order(decisions, ruleset.interventions.priority_order)
    cut = cut_whole_day(ruleset, ordered, features, moved_before)
    cut[OVER_CAPACITY] = cut[OVER_CAPACITY].astype("boolean")
    return cut


def answers_decisions(
    features: pd.DataFrame,
    scores: pd.DataFrame,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    decided: DecidedDay | None = None,
    *,
    state_rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every learner of ``features`` decided on ``state``, the day's capacity applied.

    Equal to ``decide_learners(features, scores, ruleset, state, as_of, whole_day=True)``; with
    the day's first decide (``decided``), only the learners it cannot answer for are decided:
    those whose state changed (and, when it kept no ``uncut`` values, those its cut moved when
    one of its callers changed).

    Args:
        features: the day's learners (every one: the capacity is the day's).
        scores: their scores, row for row with ``features``.
        ruleset: the rules of the first decide too.
        state: the stored state to decide on (the state the day left).
        as_of: the day.
        decided: the day's first decide on another state; None decides everyone.
        state_rows: each learner's row in ``state`` (``codes_of`` of their ids among its
            ``customer_id``), when the caller has looked them up already.
    """

    def everyone() -> pd.DataFrame:
        return decide_learners(features, scores, ruleset, state, as_of, whole_day=True)

    first = None if decided is None else decided.decisions
    if first is None or not _same_columns(decided.state, state) or first[OVER_CAPACITY].hasnans:
        return everyone()  # (a null over_capacity: decisions the cut never saw)
    ids = features["customer_id"].array
    reused = codes_of(ids, first["customer_id"].array)
    redo = (reused < 0) | changed_states(ids, decided.state, state, after_rows=state_rows)
    kept, redo, still_over, moved_before = _reusable(ruleset, decided, reused, redo)
    if kept is None:
        return everyone()
    rows = np.flatnonzero(redo)
    again = features.iloc[rows].reset_index(drop=True)
    # Rows of the frames the day's first decide checked, and the store's own state: the
    # engine's contract checks of its inputs and output would only repeat (a third of the
    # answers' decide). Frames are still coerced to the contract's dtypes.
    fresh = decide_learners(
        again, scores.iloc[rows].reset_index(drop=True), ruleset,
        state[is_in(state["customer_id"], again["customer_id"])], as_of,
        check_inputs=False, check_output=False,
    ).drop(columns=OVER_CAPACITY)  # fmt: skip
    kept = _typed_as(kept, fresh)
    if kept is None:  # a value the fresh dtypes cannot hold: decide everyone instead
        return everyone()
    day = pd.concat([kept, fresh], ignore_index=True)
    cut = whole_day_decisions(ruleset, day, features, moved_before)
    if not still_over.any():
        return cut
    whole = _with_overflow(ruleset, cut, first.iloc[reused[still_over]])
    return everyone() if whole is None else whole


def overflow_stays(ruleset: RuleSet, kept: pd.DataFrame) -> bool:
    """Whether every learner the first cut moved is past the cut again, whatever changed.

    ``kept`` are the first decide's rows the cut did not touch, of learners whose state is the
    same. A learner is over capacity when ``capacity`` calls (non-control personal learners)
    come before them in decision order (``rules.capacity``). When ``kept`` still holds
    ``capacity`` calls, they are the first cut's callers, all unchanged: they still come
    before every learner that cut moved (whose rows are unchanged too), so those learners are
    past the cut again, and their overflow decision (priority, action, control draw,
    campaign) is the first cut's: it depends on the learner's own row alone. Otherwise a
    caller changed, and the moved learners are decided again.
    """
    capacity = ruleset.interventions.capacity
    if capacity is None or kept.empty:
        return False
    interventions = ruleset.interventions
    priority = codes_of(kept["priority"], interventions.priority_order)
    personal = (priority != NO_CODE) & (priority < len(interventions.personal_priorities()))
    calls = int((personal & ~kept["control"].to_numpy(bool)).sum())
    return calls >= capacity.personal_outreach_per_day


def _reusable(
    ruleset: RuleSet, decided: DecidedDay, reused: np.ndarray, redo: np.ndarray
) -> tuple[pd.DataFrame | None, np.ndarray, np.ndarray, pd.DataFrame | None]:
    """What the answers take from the first decide: its rows reused before the cut, the
    learners to decide again (``redo`` and any more), those who keep the first cut's overflow
    row as it is (masks aligned with ``reused``, the day's learners' rows in the first
    decide), and the first cut's overflow rows the new cut may take (``moved_before``).

    With ``uncut``, every learner not redone is reused as the rules decided them, and the cut
    runs again over all; without it, the rows the first cut moved are reused only when they
    stay past the cut (``overflow_stays``), and are decided again otherwise. No rows (None):
    the reuse cannot be trusted (a moved learner without its ``uncut`` row): decide everyone.
    """
    first = decided.decisions
    if decided.uncut is not None:
        unchanged = first.iloc[reused[~redo]]
        moved = unchanged[unchanged[OVER_CAPACITY].to_numpy(bool)]
        kept = _uncut_rows(unchanged, decided.uncut)
        nobody = np.zeros(len(reused), bool)
        return kept, redo, nobody, moved[list(decided.uncut.columns)]
    over = np.zeros(len(reused), bool)
    over[~redo] = first[OVER_CAPACITY].to_numpy(bool)[reused[~redo]]
    kept = first.iloc[reused[~redo & ~over]].drop(columns=OVER_CAPACITY)
    still_over = over if overflow_stays(ruleset, kept) else np.zeros(len(reused), bool)
    return kept, redo | (over & ~still_over), still_over, None


def _uncut_rows(first: pd.DataFrame, uncut: pd.DataFrame) -> pd.DataFrame | None:
    """``first``'s rows (the first cut's) with the rules' own values back where the cut moved
    a learner, ``over_capacity`` dropped: the first decide before its cut (None: a moved
    learner has no ``uncut`` row, so its own values are not known)."""
    moved = np.flatnonzero(first[OVER_CAPACITY].to_numpy(bool))
    at = codes_of(first["customer_id"].array[moved], uncut["customer_id"].array)
    if (at < 0).any():
        return None
    # The cut's dtypes: its categories hold the rules' values too.
    names = uncut.columns.drop("customer_id")
    restored = {name: rows_set(first[name], moved, uncut[name].take(at)) for name in names}
    return first.assign(**restored).drop(columns=OVER_CAPACITY)


def _with_overflow(
    ruleset: RuleSet, cut: pd.DataFrame, overflow: pd.DataFrame
) -> pd.DataFrame | None:
    """The cut day with the first cut's ``overflow`` rows added, in decision order (None: their
    values do not fit the cut's dtypes)."""
    automated = list(dict.fromkeys(ruleset.interventions.capacity.automated_actions.values()))
    actions = cut["action"].cat.categories
    missing = [action for action in automated if action not in actions]
    if missing:  # as the whole day's cut adds them (it moved someone)
        cut = cut.assign(action=cut["action"].cat.add_categories(missing))
    overflow = _typed_as(overflow, cut)
    if overflow is None:
        return None
    whole = pd.concat([cut, overflow], ignore_index=True)
    return in_decision_order(whole, ruleset.interventions.priority_order)


def changed_states(ids: pd.api.extensions.ExtensionArray, before: pd.DataFrame,
                   after: pd.DataFrame, *, after_rows: np.ndarray | None = None,
                   ) -> np.ndarray:  # fmt: skip
    """Which learners' stored state row differs between two state frames (aligned with ``ids``).

    A learner in one frame only has changed; in neither, not. Missing values equal each other.
    ``after_rows``: each id's row in ``after`` (``codes_of``), when the caller has it.
    """
    in_before = codes_of(ids, before["customer_id"].array)
    in_after = codes_of(ids, after["customer_id"].array) if after_rows is None else after_rows
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
    texts = [arrow_text(side) for side in (left, right)]
    if texts[0] is not None and texts[1] is not None:  # compared in Arrow, not as objects
        same = pc.fill_null(pc.equal(*texts), False).to_numpy(zero_copy_only=False)
    elif left.dtype.kind == "M" or right.dtype.kind == "M":
        values = [pd.to_datetime(side).to_numpy("datetime64[ns]") for side in (left, right)]
        same = values[0] == values[1]
    else:
        values = [side.to_numpy(object) for side in (left, right)]
        same = values[0] == values[1]
    return np.where(left_missing | right_missing, left_missing & right_missing, same)


def arrow_text(column: pd.Series) -> pa.Array | None:
    """A text column's own Arrow buffers as ``string`` (nulls as nulls), None for another
    dtype: what ``pa.array(column.astype(object), pa.string(), from_pandas=True)`` gives,
    without a Python string per row."""
    if not isinstance(column.dtype, pd.StringDtype):
        return None
    return one_array(pa.array(column.array)).cast(pa.string())


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


__all__ = [
    "DecidedDay",
    "answers_decisions",
    "arrow_text",
    "changed_states",
    "cut_day",
    "whole_day_decisions",
]
