"""The decisions' frame: what the rules engine (``rules.engine.decide``) hands back, assembled.

Where each learner stands (``CurrentState``) and what the rules chose (``Moves``) become the
decision columns (``rules.schemas.DECISION_COLUMNS``): tags, rule, description, signal, priority,
action, campaign and channel, control group, lifetime values, held reason, behaviour tags and
``why``, in the documented row order (``decision_order``). What depends only on the ruleset
(the rule tables, the description sentences, the priority and action tables) is built once per
ruleset (``rules.schemas.built_once``): deciding one learner must not rebuild them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from rules.arrivals import arrival_of
from rules.behaviours import BehaviourLookup
from rules.campaign_matching import campaign_columns
from rules.codes import NO_CODE, codes_of
from rules.columns import Columns
from rules.config import RuleSet
from rules.interventions import control_flags, value_at_risk
from rules.lifetime import expected_months, months_at_risk, projected_value
from rules.ordered import keys_in_order, order_keys
from rules.schemas import DECISION_COLUMNS, HELD_REASONS, SIGNALS, built_once

MODEL_ABSENT_NOTE = " [no model score: decided on rules only]"


COOLDOWN, OVERRIDE = 0, 1  # codes into HELD_REASONS


@dataclass(frozen=True)
class CurrentState:
    """Where each scored learner stands before today's decision (arrays aligned with ``scored``).

    Attributes:
        from_code: index into ``ruleset.tag_ids``; ``len(tag_ids)`` for a new learner.
        days_in_tag: whole days since the learner entered the tag (0 for a new learner).
        override_active: an override of kind ``hold`` holds the learner today.
        campaign_active: the learner's retention campaign runs today.
    """

    from_code: np.ndarray
    days_in_tag: np.ndarray
    override_active: np.ndarray
    campaign_active: np.ndarray


@dataclass(frozen=True)
class Moves:
    """The outcome per learner (arrays aligned with ``scored``).

    Attributes:
        winner: index of the rule that decided (moved or held), NO_CODE when none fired.
        moved: the learner changes tag today.
        to_code: resulting tag index; NO_CODE for a new learner no rule could tag.
        held_code: index into HELD_REASONS, NO_CODE when nothing was held.
        signal_code: index into SIGNALS for a move, NO_CODE otherwise.
    """

    winner: np.ndarray
    moved: np.ndarray
    to_code: np.ndarray
    held_code: np.ndarray
    signal_code: np.ndarray


@dataclass(frozen=True)
class _RuleTables:
    """What a ruleset's decisions look up, built once per ruleset (``built_once``).

    The tables indexed by tag code have one extra slot at the end, which answers for the
    NO_CODE (-1) index.
    """

    applies_from: np.ndarray
    """(rules x (tags + new)): the rule applies to a learner in that tag (last: new)."""
    rule_to: np.ndarray
    """Each rule's target tag code, then NO_CODE."""
    terminal: np.ndarray
    """Each tag is terminal, then False."""
    cooldowns: np.ndarray
    """Each tag's cooldown days, then 0."""
    precedence: np.ndarray
    """Rule indices by precedence: rules into a terminal tag first, then file order."""

    @classmethod
    def of(cls, ruleset: RuleSet) -> _RuleTables:
        tag_index = {tag: i for i, tag in enumerate(ruleset.tag_ids)}
        source_index = tag_index | {"new": len(ruleset.tag_ids)}
        applies_from = np.zeros((len(ruleset.rules), len(source_index)), bool)
        for i, rule in enumerate(ruleset.rules):
            applies_from[i, [source_index[source] for source in rule.sources]] = True
        rule_to = np.array([tag_index[rule.to] for rule in ruleset.rules] + [NO_CODE])
        terminal = np.array([tag.terminal for tag in ruleset.tags] + [False])
        to_terminal = terminal[rule_to[:-1]]
        ranked = [i for i in range(len(ruleset.rules)) if to_terminal[i]]
        ranked += [i for i in range(len(ruleset.rules)) if not to_terminal[i]]
        cooldowns = np.array([ruleset.cooldown_days.get(tag, 0) for tag in ruleset.tag_ids] + [0])
        return cls(applies_from, rule_to, terminal, cooldowns, np.array(ranked, dtype=np.int64))


def rule_tables(ruleset: RuleSet) -> _RuleTables:
    """The ruleset's tables (``_RuleTables``), built on first use."""
    return built_once(ruleset, "rule_tables", lambda: _RuleTables.of(ruleset))


def decision_frame(
    ruleset: RuleSet,
    scored: Columns,
    current: CurrentState,
    moves: Moves,
    as_of: pd.Timestamp,
    *,
    why: pd.api.extensions.ExtensionArray | None = None,
) -> pd.DataFrame:
    """Assemble the decisions in their documented order (priority, value at risk, customer_id).

    ``why`` (aligned with ``scored``, ``rules.reasons.why_texts``) is all null when not given.
    """
    tags = ruleset.tag_ids
    customer_ids = scored.array("customer_id")  # the stored array: the decisions keep its dtype
    p_churn = scored["p_churn"]
    product_code = codes_of(scored.array("product_tag"), ruleset.interventions.product_tags)
    priority_code, action_code, actions = _priority_and_action(ruleset, product_code, moves.to_code)
    from_code = np.where(current.from_code < len(tags), current.from_code, NO_CODE)
    lifetime = _lifetime_columns(ruleset, scored, product_code)
    held_lookup = BehaviourLookup.of(ruleset.behaviours, scored)
    tags_held = held_lookup.tags()
    columns = {
        "customer_id": customer_ids,
        "as_of": np.full(len(scored), as_of.to_datetime64(), dtype="datetime64[ns]"),
        "from_tag": _categorical(from_code, tags),
        "to_tag": _categorical(moves.to_code, tags),
        "changed": moves.moved,
        "rule_id": _categorical(
            np.where(moves.moved, moves.winner, NO_CODE), [rule.id for rule in ruleset.rules]
        ),
        "description": _descriptions(ruleset, current, moves, np.isnan(p_churn)),
        "signal": _categorical(moves.signal_code, SIGNALS),
        "p_churn": p_churn,
        "confidence": scored["confidence"],
        "priority": _categorical(priority_code, ruleset.interventions.priority_order, ordered=True),
        "action": _categorical(action_code, actions),
        "behaviour_tags": tags_held,
    }
    # Campaigns are matched on the arrays, before any frame exists: the frame is built once,
    # in its documented column order (inserting two columns into it cost a tenth of deciding
    # one learner).
    products = _categorical(product_code, ruleset.interventions.product_tags)
    columns["campaign_id"], columns["channel"] = campaign_columns(
        ruleset.campaigns, columns | arrival_of(scored), products, behaviours=held_lookup
    )
    columns |= {
        "control": control_flags(
            customer_ids, action_code, actions, ruleset.interventions.control_share
        ),
        **lifetime,
        "held": _categorical(moves.held_code, HELD_REASONS),
        "behaviour_tags": pd.array(tags_held, dtype=str),
        "why": pd.array([None] * len(scored), dtype=str) if why is None else why,
    }
    # copy=False: every array is this call's own or immutable (Arrow ids); same-dtype columns
    # are stacked into blocks (a copy) either way.
    decisions = pd.DataFrame({name: columns[name] for name in DECISION_COLUMNS}, copy=False)
    order = decision_order(priority_code, lifetime["value_at_risk"], p_churn, customer_ids)
    if np.array_equal(order, np.arange(len(order))):  # one learner, or already in order
        return decisions
    return decisions.take(order).reset_index(drop=True)


def decision_order(
    priority_code: np.ndarray,
    value_at_risk: np.ndarray,
    p_churn: np.ndarray,
    customer_ids: ArrayLike,
) -> np.ndarray:
    """Row order: priority (P1 first, none last), value at risk descending, p_churn descending
    (NaN last for both), id.

    Learners as safe as a healthy one all have value at risk 0 (``rules.lifetime``): among
    ties the likelier to leave comes first. The numeric keys are sorted first; only runs of
    rows tied on all of them are then ordered by customer id, so that a million strings are
    sorted only when the values really tie. Rows in that order already (a cut of the day's
    sorted decisions) are recognised in a few comparisons (``rules.ordered.keys_in_order``)
    and not sorted again.
    """
    keys = order_keys(priority_code, value_at_risk, p_churn)
    if keys_in_order(keys, customer_ids):
        return np.arange(len(keys[0]))
    order = np.lexsort(keys[::-1])  # lexsort sorts by its last key first
    sorted_keys = [key[order] for key in keys]
    tied = np.logical_and.reduce([key[1:] == key[:-1] for key in sorted_keys])
    if not tied.any():
        return order
    in_tie = np.zeros(len(order), bool)
    in_tie[1:] |= tied
    in_tie[:-1] |= tied
    run = np.cumsum(np.concatenate([[True], ~tied]))  # one number per run of tied rows
    rows = np.flatnonzero(in_tie)
    ties = pa.table({"run": run[rows], "id": pa.array(customer_ids).take(order[rows])})
    within = pc.sort_indices(ties, sort_keys=[("run", "ascending"), ("id", "ascending")])
    order[rows] = order[rows][within.to_numpy()]
    return order


def _categorical(
    codes: np.ndarray, categories: list[str] | tuple[str, ...], *, ordered: bool = False
) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, dtype=_categories(tuple(categories), ordered))


@functools.lru_cache(maxsize=256)
def _categories(categories: tuple[str, ...], ordered: bool) -> pd.CategoricalDtype:
    """The dtype of a decision column, built once: building one checks its categories (an
    Index per call), which was a tenth of deciding one learner. Dtypes are immutable."""
    return pd.CategoricalDtype(list(categories), ordered=ordered)


def _priority_and_action(
    ruleset: RuleSet, product_code: np.ndarray, to_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Priority and action codes per learner from (product_tag, resulting tag) tables."""
    priority_table, action_table, actions = built_once(
        ruleset, "priority_action", lambda: _priority_action_tables(ruleset)
    )
    return priority_table[product_code, to_code], action_table[product_code, to_code], actions


def _priority_action_tables(ruleset: RuleSet) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(product x tag) priority and action codes, and the action texts, built once per ruleset."""
    interventions = ruleset.interventions
    tags = ruleset.tag_ids
    picks = [[interventions.lookup(p, t) for t in tags] for p in interventions.product_tags]
    actions = list(dict.fromkeys(pick.action for row in picks for pick in row))
    priorities = interventions.priority_order
    # Column len(tags) (reached by NO_CODE = -1) is for a learner with no tag: no priority.
    priority_table = np.full((len(picks), len(tags) + 1), NO_CODE)
    action_table = np.full((len(picks), len(tags) + 1), NO_CODE)
    for p, row in enumerate(picks):
        priority_table[p, : len(tags)] = [priorities.index(pick.priority) for pick in row]
        action_table[p, : len(tags)] = [actions.index(pick.action) for pick in row]
    return priority_table, action_table, actions


def _lifetime_columns(
    ruleset: RuleSet, scored: Columns, product_code: np.ndarray
) -> dict[str, np.ndarray]:
    """``value_at_risk``, ``expected_months`` and ``projected_value`` (``rules.lifetime``)."""
    interventions = ruleset.interventions
    weights = np.array(list(interventions.value_weights.values()), dtype=float)
    p_churn = np.asarray(scored["p_churn"], dtype=float)
    mrr = np.asarray(scored["mrr"], dtype=float)
    months = expected_months(p_churn, interventions.lifetime)
    at_risk = months_at_risk(months, interventions.lifetime)
    value = value_at_risk(
        p_churn,
        np.asarray(scored["risk_indicator_count"], dtype=float),
        mrr,
        weights[product_code],
        at_risk,
    )
    return {
        "value_at_risk": value,
        "expected_months": months,
        "projected_value": projected_value(mrr, months),
    }


def _descriptions(
    ruleset: RuleSet, current: CurrentState, moves: Moves, model_absent: np.ndarray
) -> pd.Categorical:
    """The audit-log sentence per learner, chosen from a small table of texts by code."""
    count = len(ruleset.rules)
    unique, remap = built_once(ruleset, "descriptions", lambda: _description_table(ruleset))
    terminal = rule_tables(ruleset).terminal
    is_new = current.from_code == len(ruleset.tag_ids)
    base = np.select(
        [
            moves.moved,
            moves.held_code == COOLDOWN,
            moves.held_code == OVERRIDE,
            terminal[current.from_code],
            is_new,
        ],
        [
            moves.winner,
            count + moves.winner,
            2 * count + moves.winner,
            3 * count + 1,
            3 * count + 2,
        ],
        3 * count,
    )
    codes = base + model_absent * (3 * count + 3)
    return _categorical(remap[codes], unique)


def _description_table(ruleset: RuleSet) -> tuple[list[str], np.ndarray]:
    """The distinct sentences, and each code's position among them (built once per ruleset:
    finding 240 texts' positions by ``list.index`` was a twentieth of deciding one learner)."""
    rules = ruleset.rules
    texts = [rule.description for rule in rules]
    texts += [
        f"{rule.id} held by the cooldown of the current tag: {rule.description}" for rule in rules
    ]
    texts += [f"{rule.id} held by an active override: {rule.description}" for rule in rules]
    texts += [
        "no rule fired: stays in the current tag",
        "terminal tag: no rule moves a learner out of it",
        "new learner: no entry rule fired, so no tag yet",
    ]
    texts += [text + MODEL_ABSENT_NOTE for text in texts]
    unique = list(dict.fromkeys(texts))  # two rules may share a description
    position = {text: index for index, text in enumerate(unique)}
    return unique, np.array([position[text] for text in texts])


def frame_order(decisions: pd.DataFrame, priority_order: Sequence[str]) -> np.ndarray:
    """``decision_order`` of a decisions frame's rows: its priorities coded by
    ``priority_order``, its value at risk, p_churn and customer ids."""
    priority = codes_of(decisions["priority"], priority_order)
    value, p_churn = (decisions[name].to_numpy(float) for name in ("value_at_risk", "p_churn"))
    return decision_order(priority, value, p_churn, decisions["customer_id"].array)


def in_decision_order(decisions: pd.DataFrame, priority_order: Sequence[str]) -> pd.DataFrame:
    """``decisions`` in ``frame_order``, on a fresh index; a frame in that order already is
    not taken again (``decision_order`` recognises it in a few comparisons)."""
    order = frame_order(decisions, priority_order)
    if np.array_equal(order, np.arange(len(order))):
        return decisions.reset_index(drop=True)
    return decisions.take(order).reset_index(drop=True)


__all__ = [
    "CurrentState",
    "Moves",
    "decision_frame",
    "decision_order",
    "frame_order",
    "in_decision_order",
    "rule_tables",
]
