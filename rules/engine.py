"""The rules engine: one pure, vectorised, order-independent function, :func:`decide`.

Semantics (DESIGN §5):

- Each rule fires where the learner's current tag is one of its ``from`` tags (``new`` for a
  learner absent from ``state``) and its condition holds.
- Among the firing rules, a move to a terminal tag (ST_006) wins, then the first in file order.
- Cooldowns hold automatic moves out of a tag the learner entered less than ``cooldown_days``
  ago; an active override of kind ``hold`` (``override_expires`` null or after ``as_of``) holds
  automatic moves. Neither holds a move to a terminal tag. An active override of kind
  ``campaign`` (a retention campaign in ST_005) holds nothing: the exit rules run, and read
  ``campaign_active`` (false once the campaign's box has ended). A held decision keeps the
  learner where they are and says why in ``held`` (and which rule was held in ``description``).
- A terminal tag is never left; a manual-entry tag (ST_005) is never entered by a rule (both are
  guaranteed by the loader and kept by the engine).
- ``signal`` records which side of the blend actually fired for the move: ``fact`` for fact rules;
  otherwise, over every firing rule into the same tag, ``rules`` if only rule-feature leaves were
  true, ``model`` if only model-score leaves, ``both`` if both. With no model score (``p_churn``
  NaN) model leaves are false, and the description says the decision was made without the model.
- ``why`` puts into words the facts the winning rule fired on, for a learner it moved or held
  (``rules.reasons``; the caller's ``Wording`` gives the labels); null for everyone else.
- ``behaviour_tags`` are the behaviour tags a learner holds (``rules.behaviours``), and
  ``campaign_id``/``channel`` the first campaign whose trigger the decision matches and its first
  step's channel, personalised by the behaviour tags (``rules.campaigns``); null for none.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from rules.codes import NO_CODE, codes_of
from rules.columns import Columns
from rules.conditions import evaluate
from rules.config import MODEL_SCORE_COLUMNS, RuleSet
from rules.decisions import (
    COOLDOWN,
    OVERRIDE,
    CurrentState,
    Moves,
    decision_frame,
    rule_tables,
)
from rules.reasons import Wording, why_texts
from rules.schemas import (
    SIGNALS,
    DecisionInputError,
    built_once,
    conformed_columns,
    decision_schema,
    scored_schema,
    state_schema,
    validate_frame,
)

FACT = 0  # code of "fact" in SIGNALS


def decide(
    ruleset: RuleSet,
    state: pd.DataFrame,
    scored: pd.DataFrame | Columns,
    as_of: date,
    *,
    check_inputs: bool = True,
    check_output: bool = True,
    wording: Wording | None = None,
) -> pd.DataFrame:
    """Decide today's status tag, priority and action of every scored learner.

    Args:
        ruleset: the validated rules (:func:`rules.loading.load_ruleset`).
        state: current tag of known learners: customer_id, tag, since (day the tag was entered),
            override_tag (nullable), override_expires (nullable; null means no expiry),
            override_kind (optional; ``hold`` or ``campaign``, a missing column or null means
            ``hold``). Naive timestamps are UTC; tz-aware ones are converted to UTC.
        scored: one row per learner to decide: customer_id, product_tag, mrr, p_churn and
            confidence (NaN when there is no model), risk_indicator_count and every feature the
            rules read. Other columns are ignored. A frame, or its ``rules.columns.Columns``
            (a caller that holds its columns already: no frame is built for the engine).
        as_of: the decision day (00:00 UTC of that day; a datetime counts as its day).
        check_inputs: validate ``scored`` and ``state`` against ``scored_schema`` and
            ``state_schema`` (the contract's checks and coercion). A caller that built both
            frames itself with the contract's dtypes and values (the online scorer: features,
            scores and stored state of its own making) passes False: the frames are only
            coerced to the schemas' dtypes (``rules.schemas.conformed_columns``), so valid
            inputs give the same decisions, and invalid ones give undefined decisions instead of
            an error. An active override that disagrees with the stored tag is an error either
            way.
        check_output: re-check the decisions against ``decision_schema`` (a self-check of the
            engine). A caller on a latency budget that tests the
            engine's output elsewhere passes False: the frame is the same either way.
        wording: labels, phrases and risk indicators for ``why`` (``rules.reasons``); without
            it a leaf reads by feature name and ``risk_indicator_count`` is not expanded. The
            indicator and evidence columns it names are read from ``scored`` where present.

    Returns:
        One row per scored learner with the columns of ``rules.schemas.DECISION_COLUMNS``, sorted
        by priority (P1 first), value_at_risk, p_churn (descending), customer_id.
        ``expected_months``
        and ``projected_value`` (mrr x expected months) are the lifetime projection of
        ``rules.lifetime`` (null without a model score; the value null where mrr is);
        ``value_at_risk`` is mrr x ``rules.lifetime.months_at_risk``, with the tier weight when
        mrr is null or 0, and risk_indicator_count / 12 x one month when there is no score.

    Raises:
        DecisionInputError: a frame breaks its contract (names the column, check and rows), or an
            active override disagrees with the stored tag.
        ValueError: the rules name operating points (``@early_warning``) that were not resolved
            against the champion's, yet ``scored`` holds model scores.
    """
    as_of_ts = pd.Timestamp(as_of.year, as_of.month, as_of.day)  # the day, even from a datetime
    wording = wording or Wording()
    columns = _scored_columns(ruleset, scored, wording.columns, check_inputs)
    _check_references_resolved(ruleset, columns)
    states = state_schema(ruleset, as_of_ts)
    state = (
        Columns.of(validate_frame(states, state))
        if check_inputs
        else conformed_columns(states, state)
    )
    current = current_state(ruleset, state, columns.array("customer_id"), as_of_ts)
    moves = choose_moves(ruleset, columns, current)
    read = {
        name: columns[name]
        for name in [*_features_used(ruleset), *wording.columns]
        if name in columns
    }
    read["campaign_active"] = current.campaign_active
    why = why_texts(ruleset, read, moves.winner, moves.moved | (moves.held_code >= 0), wording)
    decisions = decision_frame(ruleset, columns, current, moves, as_of_ts, why=why)
    if not check_output:
        return decisions
    # The engine's own new frame: checked in place, not copied.
    return validate_frame(decision_schema(ruleset), decisions, inplace=True)


def _scored_columns(
    ruleset: RuleSet, scored: pd.DataFrame | Columns, optional: tuple[str, ...], check: bool
) -> Columns:
    """``scored``'s columns the engine reads, validated (``check``) or coerced to the schema.

    Every column is taken out once (``rules.columns``): the steps below read arrays, not Series.
    A caller's frame is validated on pandera's copy (its coercion must not touch the caller's
    frame); from ``Columns``, the engine builds a frame of the schema's columns alone for the
    check, and validates that frame in place: the same checks and coercion, without the copy.
    """
    schema = scored_schema(ruleset, optional)
    if not check:
        return conformed_columns(schema, scored)
    if not isinstance(scored, Columns):
        return Columns.of(validate_frame(schema, scored))
    kept = {name: scored.array(name) for name in scored.names() if name in schema.columns}
    frame = Columns(kept, len(scored)).frame()
    in_place = scored_schema(ruleset, optional, filtered=False)
    return Columns.of(validate_frame(in_place, frame, inplace=True))


def _features_used(ruleset: RuleSet) -> tuple[str, ...]:
    """``ruleset.features_used``, walked once per ruleset (every decision reads it)."""
    return built_once(ruleset, "features_used", lambda: tuple(ruleset.features_used))


def _check_references_resolved(ruleset: RuleSet, scored: pd.DataFrame | Columns) -> None:
    """Refuse model scores judged by rules whose operating points were never resolved.

    Unresolved ``@name`` leaves are false (rules-only mode has no scores to compare); with
    scores present they would silently never fire.
    """
    references = built_once(ruleset, "references", lambda: tuple(ruleset.references))
    if not references:
        return
    scores = [name for name in MODEL_SCORE_COLUMNS if name in scored]
    if any((~pd.isna(np.asarray(scored[name]))).any() for name in scores):
        rule_id, _, leaf = references[0]
        raise ValueError(
            f"rules: rule {rule_id} names the operating point '@{leaf.reference}', which was not "
            "resolved against the champion's (RuleSet.with_operating_points), yet the learners "
            "have model scores"
        )


def current_state(
    ruleset: RuleSet, state: pd.DataFrame | Columns, customer_ids: ArrayLike, as_of: pd.Timestamp
) -> CurrentState:
    """Look each scored learner up in the (validated) state; absent ones are new."""
    state = state if isinstance(state, Columns) else Columns.of(state)
    _check_overrides_agree(state, as_of)
    new_code = len(ruleset.tag_ids)
    if len(state) == 0:
        rows = len(customer_ids)
        nothing = np.zeros(rows, bool)
        return CurrentState(np.full(rows, new_code), np.zeros(rows, np.int64), nothing, nothing)
    positions = codes_of(customer_ids, state.array("customer_id"))
    known = positions >= 0
    safe = np.where(known, positions, 0)  # any valid row; masked out by ``known``
    tag_codes = codes_of(state.array("tag"), ruleset.tag_ids)
    entered = state["since"].astype("datetime64[D]")
    days = (as_of.to_datetime64().astype("datetime64[D]") - entered).astype(np.int64)
    active = _override_active(state, as_of)
    campaign = active & (_override_kinds(state) == "campaign")
    return CurrentState(
        from_code=np.where(known, tag_codes[safe], new_code),
        days_in_tag=np.where(known, days[safe], 0),
        override_active=known & (active & ~campaign)[safe],
        campaign_active=known & campaign[safe],
    )


def _override_kinds(state: Columns) -> np.ndarray:
    """Each row's override kind; ``hold`` where the column is missing or null."""
    if "override_kind" not in state:
        return np.full(len(state), "hold", dtype=object)
    kinds = state.to_numpy("override_kind", object)
    return np.where(pd.isna(kinds), "hold", kinds).astype(object)


def _override_active(state: Columns, as_of: pd.Timestamp) -> np.ndarray:
    """Overrides in force on ``as_of``: set, and without expiry or expiring after as_of.

    On the validated state's naive datetime64 values (numpy: a few Series operations were a
    tenth of deciding one learner); any other column is compared as a Series.
    """
    has_override = ~pd.isna(state["override_tag"])
    expires = state["override_expires"]
    if expires.dtype.kind == "M":
        return has_override & (np.isnat(expires) | (expires > as_of.to_datetime64()))
    column = pd.Series(state.array("override_expires"))
    return has_override & (column.isna() | (column > as_of)).to_numpy()


def _check_overrides_agree(state: Columns, as_of: pd.Timestamp) -> None:
    """An active override must be the learner's stored tag, or the store is inconsistent."""
    stored = state.to_numpy("override_tag", object) != state.to_numpy("tag", object)
    disagree = _override_active(state, as_of) & stored
    if disagree.any():
        examples = state.frame().loc[disagree, ["customer_id", "tag", "override_tag"]].head(3)
        raise DecisionInputError(
            f"state: {int(disagree.sum())} rows have an active override whose override_tag is not "
            f"their tag (e.g. {examples.to_dict('records')}); fix the state store first"
        )


def fire_rules(
    ruleset: RuleSet, scored: pd.DataFrame | Columns, current: CurrentState
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate every rule on every learner (scored columns, and the state's ``STATE_COLUMNS``).

    Returns:
        Three (rules x learners) boolean arrays: the rule fires; it fires with a true leaf on a
        rule feature; it fires with a true leaf on a model score.
    """
    rows, from_code = len(scored), current.from_code
    # Each column's values once: the leaves reading a column would otherwise each convert it.
    columns = {name: np.asarray(scored[name]) for name in _features_used(ruleset)}
    columns["campaign_active"] = current.campaign_active
    applies_from = rule_tables(ruleset).applies_from
    fired = np.zeros((len(ruleset.rules), rows), bool)
    rules_side, model_side = np.zeros_like(fired), np.zeros_like(fired)
    for i, rule in enumerate(ruleset.rules):
        applicable = applies_from[i][from_code]
        outcome = evaluate(rule.condition, columns, MODEL_SCORE_COLUMNS, rows)
        fired[i] = outcome.fired & applicable
        rules_side[i] = outcome.rules_side & applicable
        model_side[i] = outcome.model_side & applicable
    return fired, rules_side, model_side


def choose_moves(ruleset: RuleSet, scored: pd.DataFrame | Columns, current: CurrentState) -> Moves:
    """Pick the winning rule per learner and apply cooldowns and overrides."""
    fired, rules_side, model_side = fire_rules(ruleset, scored, current)
    tables = rule_tables(ruleset)
    rule_to, terminal, cooldowns = tables.rule_to, tables.terminal, tables.cooldowns
    winner = _winning_rule(fired, tables.precedence)
    target = rule_to[winner]
    has_winner = winner != NO_CODE
    exempt = terminal[target]  # moves to a terminal tag ignore cooldowns and overrides
    held_override = has_winner & ~exempt & current.override_active
    held_cooldown = (
        has_winner & ~exempt & ~held_override & (current.days_in_tag < cooldowns[current.from_code])
    )
    moved = has_winner & ~held_override & ~held_cooldown
    is_new = current.from_code == len(ruleset.tag_ids)
    stay = np.where(is_new, NO_CODE, current.from_code)
    held_code = np.select([held_cooldown, held_override], [COOLDOWN, OVERRIDE], NO_CODE)
    signal_code = _signal_codes(ruleset, rules_side, model_side, rule_to[:-1], winner, target)
    return Moves(
        winner=winner,
        moved=moved,
        to_code=np.where(moved, target, stay),
        held_code=held_code,
        signal_code=np.where(moved, signal_code, NO_CODE),
    )


def _winning_rule(fired: np.ndarray, precedence: np.ndarray) -> np.ndarray:
    """The firing rule that comes first in ``precedence`` (rule indices), NO_CODE for none."""
    if len(precedence) == 0:
        return np.full(fired.shape[1], NO_CODE)
    ranked = fired[precedence]
    first = precedence[ranked.argmax(axis=0)]
    return np.where(ranked.any(axis=0), first, NO_CODE)


def _signal_codes(
    ruleset: RuleSet,
    rules_side: np.ndarray,
    model_side: np.ndarray,
    rule_to: np.ndarray,
    winner: np.ndarray,
    target: np.ndarray,
) -> np.ndarray:
    """Which side fired: fact for fact rules, else rules/model/both over rules into ``target``."""
    declared = np.array([SIGNALS.index(rule.signal) for rule in ruleset.rules] + [NO_CODE])
    any_rules = np.zeros(len(winner), bool)
    any_model = np.zeros(len(winner), bool)
    for i, rule in enumerate(ruleset.rules):
        if rule.signal == "fact":
            continue
        into_target = target == rule_to[i]
        any_rules |= rules_side[i] & into_target
        any_model |= model_side[i] & into_target
    sides = np.select(
        [any_rules & any_model, any_rules, any_model],
        [SIGNALS.index("both"), SIGNALS.index("rules"), SIGNALS.index("model")],
        NO_CODE,
    )
    winner_declared = declared[winner]
    return np.where((winner_declared == FACT) | (sides == NO_CODE), winner_declared, sides)
