"""The day's capacity for personal outreach: :func:`cut_to_capacity`, pure and vectorised.

``decide`` gives each learner the priority of their synergy row, tag default or escalation; it
decides learners one by one and cannot know how many the CS team can reach. The cut is a
property of a whole day: applied to all of a day's decisions, it keeps the call list to
``capacity.personal_outreach_per_day`` learners and moves the rest to automated outreach.

The call list is the personal priorities (P1, P2: those before ``capacity.overflow_priority``)
in decision order: priority, value at risk descending, customer_id. A learner keeps a personal
priority when a call is still free as the list reaches them, that is when fewer than the capacity
of the non-control learners before them kept theirs. The control group takes no call, so a
control learner above the cut keeps their priority (the "would have been called" the experiment
measures) and the learners called are at most the capacity. A learner past the cut gets the
overflow priority, the automated action of their status tag, a fresh control draw for that action
(the draw is per action), and ``over_capacity`` True.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from rules.arrivals import ARRIVAL_FEATURE
from rules.campaign_matching import campaign_columns
from rules.codes import NO_CODE, codes_of
from rules.columns import Columns
from rules.config import RuleSet
from rules.decisions import decision_order, frame_order
from rules.interventions import control_flags

OVER_CAPACITY = "over_capacity"
"""The column :func:`cut_to_capacity` adds: the cut moved the learner to automated outreach."""
CUT_COLUMNS = ("priority", "action", "control", "campaign_id", "channel")
"""The decision columns :func:`cut_to_capacity` rewrites for the learners it moves (the
campaign's two only when the decisions carry them); every other column is the rules' own."""


def over_capacity_rows(ruleset: RuleSet, decisions: pd.DataFrame) -> np.ndarray:
    """Which decisions the day's capacity moves to automated outreach (aligned with the rows).

    Args:
        ruleset: the rules (``interventions.capacity``; None means no limit).
        decisions: all of one day's decisions (``rules.decide`` output, in any row order).
    """
    capacity = ruleset.interventions.capacity
    if capacity is None or decisions.empty:
        return np.zeros(len(decisions), bool)
    interventions = ruleset.interventions
    priority = codes_of(decisions["priority"], interventions.priority_order)
    personal = (priority != NO_CODE) & (priority < len(interventions.personal_priorities()))
    value = decisions["value_at_risk"].to_numpy(float)
    p_churn = decisions["p_churn"].to_numpy(float)
    order = decision_order(priority, value, p_churn, decisions["customer_id"].array)
    calls = (personal & ~decisions["control"].to_numpy(bool))[order].astype(np.int64)
    calls_before = np.cumsum(calls) - calls
    over = np.zeros(len(decisions), bool)
    over[order] = personal[order] & (calls_before >= capacity.personal_outreach_per_day)
    return over


def cut_to_capacity(
    ruleset: RuleSet,
    decisions: pd.DataFrame,
    *,
    product_tags: pd.Series | None = None,
    tenure_days: pd.Series | None = None,
    moved_before: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Apply the day's capacity to all of one day's decisions (see the module docstring).

    Args:
        ruleset: the rules the decisions were made with.
        decisions: ``rules.decide`` output for every learner of the day.
        product_tags: each learner's product tier, indexed by customer_id: the overflow's
            campaign is matched again on its new priority (without it, campaign triggers that
            name a product do not match the overflow).
        tenure_days: each learner's days since enrolment (``rules.arrivals.ARRIVAL_FEATURE``),
            indexed by customer_id: an onboarded learner of the overflow matches no transition
            trigger again (without it, every first tagging of the overflow arrives).
        moved_before: an earlier cut's rows (``customer_id`` and ``CUT_COLUMNS``) of learners
            it moved whose decision rows are the same in ``decisions``: when this cut moves
            them too, their overflow values are taken from there, not drawn and matched again
            (they depend on the learner's own row alone). None: every one is drawn.

    Returns:
        The decisions with the overflow's priority, action and control redone, an
        ``over_capacity`` column (bool) last, in decision order (priority, value at risk
        descending, customer_id).
    """
    over = over_capacity_rows(ruleset, decisions)
    cut = decisions.assign(**{OVER_CAPACITY: over})
    if not over.any():
        return cut
    automated = list(dict.fromkeys(ruleset.interventions.capacity.automated_actions.values()))
    actions = cut["action"].cat.add_categories(
        [action for action in automated if action not in cut["action"].cat.categories]
    )
    cut = cut.assign(action=actions)
    drawn = over
    if moved_before is not None and len(moved_before):
        known = np.full(len(cut), -1)
        known[over] = codes_of(cut["customer_id"].array[over], moved_before["customer_id"].array)
        cut = _with_values(cut, np.flatnonzero(known >= 0), moved_before.take(known[known >= 0]))
        drawn = over & (known < 0)
    if drawn.any():
        cut = _overflow(ruleset, cut, drawn, automated, product_tags, tenure_days)
    order = frame_order(cut, ruleset.interventions.priority_order)
    return cut.take(order).reset_index(drop=True)


def _overflow(
    ruleset: RuleSet,
    cut: pd.DataFrame,
    over: np.ndarray,
    automated: list[str],
    product_tags: pd.Series | None,
    tenure_days: pd.Series | None,
) -> pd.DataFrame:
    """``cut`` with the ``over`` rows moved: the overflow priority, the automated action of
    their tag, a fresh control draw for it and the campaign matched on them (by
    ``cut_to_capacity``'s product_tags and tenure_days)."""
    capacity = ruleset.interventions.capacity
    tags = cut.loc[over, "to_tag"].astype(str)
    action_code = codes_of(tags.map(capacity.automated_actions), automated)
    control = control_flags(
        cut.loc[over, "customer_id"].array,
        action_code,
        automated,
        ruleset.interventions.control_share,
    )
    rows = np.flatnonzero(over)
    # Set on the categoricals' codes: setitem looks each of the overflow's values up again.
    # Indexed as ``np.array(automated)[action_code]`` was (a -1 is the last action).
    actions = _categorical(automated, np.arange(len(automated))[action_code])
    priorities = _categorical([capacity.overflow_priority], np.zeros(len(rows), np.int64))
    controls = cut["control"].to_numpy(bool).copy()
    controls[over] = control
    cut = cut.assign(
        priority=rows_set(cut["priority"], rows, priorities),
        action=rows_set(cut["action"], rows, actions),
        control=controls,
    )
    if "campaign_id" in cut:
        cut = _rematch_campaigns(ruleset, cut, over, product_tags, tenure_days)
    return cut


def cut_whole_day(
    ruleset: RuleSet,
    decisions: pd.DataFrame,
    learners: pd.DataFrame | Columns,
    moved_before: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``cut_to_capacity`` of a whole day's ``decisions``, given the day's learners
    (``learners``: the features, or their ``Columns``): their product tier and tenure, on
    which the overflow's campaign is matched again, taken by customer_id where present.

    Built from the columns it reads: ``set_index`` would copy every feature column of the day.
    """

    def array(name: str) -> ArrayLike:
        return learners.array(name) if isinstance(learners, Columns) else learners[name].array

    ids = pd.Index(array("customer_id"), name="customer_id")
    by_id = {
        name: pd.Series(array(name), index=ids, name=name)
        for name in ("product_tag", ARRIVAL_FEATURE)
        if name in learners
    }
    return cut_to_capacity(
        ruleset, decisions, product_tags=by_id.get("product_tag"),
        tenure_days=by_id.get(ARRIVAL_FEATURE), moved_before=moved_before,
    )  # fmt: skip


def _with_values(cut: pd.DataFrame, rows: np.ndarray, values: pd.DataFrame) -> pd.DataFrame:
    """``cut`` with ``values``' ``CUT_COLUMNS`` (row for row with ``rows``) set at ``rows``."""
    columns = {name: rows_set(cut[name], rows, values[name]) for name in CUT_COLUMNS if name in cut}
    return cut.assign(**columns)


def rows_set(column: pd.Series, rows: np.ndarray, values: pd.Series) -> pd.Series:
    """A copy of ``column`` with ``values`` at positions ``rows``: ``column.iloc[rows] = values``.

    Categorical into categorical is done on the codes (setitem looks every value up among the
    categories, a tenth of the answers' cut at 200k learners).

    Raises:
        TypeError: a value that is not one of ``column``'s categories (as setitem raises).
    """
    if isinstance(column.dtype, pd.CategoricalDtype) and isinstance(
        values.dtype, pd.CategoricalDtype
    ):
        into = column.cat.categories.get_indexer(values.cat.categories)
        codes = values.cat.codes.to_numpy()
        recoded = np.full(len(codes), -1, dtype=into.dtype)
        recoded[codes >= 0] = into[codes[codes >= 0]]
        if ((recoded < 0) & (codes >= 0)).any():
            raise TypeError(f"{column.name}: a value is not one of the column's categories")
        all_codes = column.cat.codes.to_numpy().copy()
        all_codes[rows] = recoded
        categorical = pd.Categorical.from_codes(all_codes, dtype=column.dtype)
        return pd.Series(categorical, index=column.index, name=column.name)
    copied = column.copy()
    copied.iloc[rows] = values.to_numpy()
    return copied


def _rematch_campaigns(
    ruleset: RuleSet,
    cut: pd.DataFrame,
    over: np.ndarray,
    product_tags: pd.Series | None,
    tenure_days: pd.Series | None,
) -> pd.DataFrame:
    """The campaign and channel of the overflow, matched on its automated priority and action."""
    rows = cut.loc[over]
    products = [None] * len(rows) if product_tags is None else _by_learner(rows, product_tags)
    if tenure_days is not None:
        rows = rows.assign(**{ARRIVAL_FEATURE: _by_learner(rows, tenure_days)})
    campaign_id, channel = campaign_columns(ruleset.campaigns, rows, products)
    at = np.flatnonzero(over)
    return cut.assign(
        campaign_id=rows_set(cut["campaign_id"], at, pd.Series(campaign_id)),
        channel=rows_set(cut["channel"], at, pd.Series(channel)),
    )


def _categorical(texts: list[str], codes: np.ndarray) -> pd.Series:
    """``texts[codes]`` as a categorical Series (``texts`` distinct), for ``rows_set``."""
    return pd.Series(pd.Categorical.from_codes(codes, categories=texts))


def _by_learner(rows: pd.DataFrame, by_id: pd.Series) -> np.ndarray:
    """Each row's value of ``by_id`` (indexed by customer_id; None: unknown or null), as
    ``Series.map`` gives.

    An Arrow hash lookup, not ``map``: the pandas Index of a day's ids cost a fifth of the cut.
    ``by_id`` has one entry per learner (``decide`` checks the keys); on a repeated id this
    takes the first entry where ``map`` would raise.
    """
    found = codes_of(rows["customer_id"].array, by_id.index.array)
    by_row = np.full(len(rows), None, dtype=object)
    known = found >= 0
    # Only the rows' values become objects: the overflow is a fifth of the day's learners.
    by_row[known] = by_id.iloc[found[known]].to_numpy(dtype=object)
    by_row[pd.isna(by_row)] = None
    return by_row


__all__ = [
    "CUT_COLUMNS",
    "OVER_CAPACITY",
    "cut_to_capacity",
    "cut_whole_day",
    "over_capacity_rows",
    "rows_set",
]
