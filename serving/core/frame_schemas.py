"""The pandera schemas of the frames crossing the state store's boundary (``serving.core.frames``).

Kept apart from ``serving.core.frames`` so that reading the store's own rows (typed there by
``stored_frame``, without pandera) does not import pandera: ~0.3 s of every ``lstep status``.
The frames module hands these out by name, importing this module on first use.
"""

from __future__ import annotations

from typing import Any

import pandera.pandas as pa

from features.schemas import AS_OF_DTYPE, UTC_INSTANT
from rules.schemas import unique_ids
from serving.core.frames import RUN_STATUSES, SCHEMAS
from serving.core.tags import STATUS_TAGS

_DATE = AS_OF_DTYPE
_INSTANT = UTC_INSTANT
_TAG_CHECK = pa.Check.isin(list(STATUS_TAGS))
_PROBABILITY = pa.Check.in_range(0.0, 1.0)


def _text(*checks: pa.Check, nullable: bool = True, **kwargs: Any) -> pa.Column:
    return pa.Column(str, list(checks), nullable=nullable, **kwargs)


def _tag(nullable: bool) -> pa.Column:
    return pa.Column(str, _TAG_CHECK, nullable=nullable)


def _probability() -> pa.Column:
    return pa.Column(float, _PROBABILITY, nullable=True)


def _frame_schema(name: str, columns: dict[str, pa.Column]) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(columns, name=name, strict=True, coerce=True)


DECISIONS_SCHEMA = _frame_schema(
    "decisions",
    {
        "customer_id": _text(unique_ids(), nullable=False),
        "as_of": pa.Column(_DATE),
        "from_tag": _tag(nullable=True),
        "to_tag": _tag(nullable=True),
        "changed": pa.Column(bool),
        "rule_id": _text(),
        "description": _text(),
        "signal": _text(),
        "p_churn": _probability(),
        "confidence": _probability(),
        "priority": _text(),
        "action": _text(),
        # The campaign the decision triggers and its channel (issue 12); optional so that
        # decisions built without a campaign catalogue still load.
        "campaign_id": _text(required=False),
        "channel": _text(required=False),
        "control": pa.Column(bool),
        "value_at_risk": pa.Column(float, nullable=True),
        # The lifetime projection (rules.lifetime); optional so that decisions built without
        # the engine still load: their scores then project nothing.
        "expected_months": pa.Column(float, nullable=True, required=False),
        "projected_value": pa.Column(float, nullable=True, required=False),
        "held": _text(),  # why a due move was held ("cooldown", "override"), else null
        # The behaviour tags held: sorted ids joined by ",", "" for none (optional, as above).
        "behaviour_tags": _text(required=False),
        # The facts that made the deciding rule fire, in words (null for a stay); optional so
        # that decisions built without the engine still load: their transitions quote none.
        "why": _text(required=False),
        # The day's capacity moved the learner to automated outreach (null: not applied).
        "over_capacity": pa.Column("boolean", nullable=True, required=False),
    },
)
"""Input of ``apply_batch``: the rules engine's decision per learner for one ``as_of``
(``rules.DECISION_COLUMNS``; categorical columns are read as text)."""

SCORES_INPUT_SCHEMA = _frame_schema(
    "scores",
    {
        "customer_id": _text(unique_ids(), nullable=False),
        "as_of": pa.Column(_DATE, required=False),
        "p_churn": _probability(),
        "p_low": _probability(),
        "p_high": _probability(),
        "confidence": _probability(),
    },
)
"""Input of ``apply_batch``: the model's calibrated score and interval per learner."""

STATE_SCHEMA = _frame_schema(
    "state",
    {
        "customer_id": _text(unique_ids(), nullable=False),
        "tag": _tag(nullable=False),
        "since": pa.Column(_DATE),
        "override_tag": _tag(nullable=True),
        "override_expires": pa.Column(_DATE, nullable=True),
        "override_kind": _text(),
    },
)
"""Output of ``state_frame``: each learner's tag on a day and the override applying, if any."""

OVERRIDES_SCHEMA = _frame_schema(
    "overrides",
    {
        "id": pa.Column(int),
        "customer_id": _text(nullable=False),
        "tag": _tag(nullable=False),
        "kind": _text(nullable=False),
        "actor": _text(nullable=False),
        "reason": _text(nullable=False),
        "created_at": pa.Column(_INSTANT),
        "effective_as_of": pa.Column(_DATE),
        "expires": pa.Column(_DATE, nullable=True),
        "cleared_at": pa.Column(_INSTANT, nullable=True),
        "cleared_as_of": pa.Column(_DATE, nullable=True),
        "cleared_by": _text(),
        "clear_reason": _text(),
    },
)
"""Output of ``overrides_frame``: data days (effective_as_of, expires, cleared_as_of) beside the
wall-clock instants they were recorded (created_at, cleared_at)."""


TRANSITIONS_SCHEMA = _frame_schema(
    "transitions",
    {
        "id": pa.Column(int),
        "customer_id": _text(nullable=False),
        "as_of": pa.Column(_DATE),
        "from_tag": _tag(nullable=True),
        "to_tag": _tag(nullable=False),
        "rule_id": _text(),
        "actor": _text(),
        "reason": _text(nullable=False),
        "why": _text(required=False),  # absent from frames built before rule reasons
        "signal": _text(),
        "p_churn": _probability(),
        "confidence": _probability(),
        "model_version": _text(),
        "run_id": _text(),
        "created_at": pa.Column(_INSTANT),
    },
)
"""The audit log as a frame (``transitions_frame``, ``history``); an input of the KPIs."""

STORED_SCORES_SCHEMA = _frame_schema(
    "scores",
    {
        "customer_id": _text(nullable=False),
        "as_of": pa.Column(_DATE),
        "p_churn": _probability(),
        "p_low": _probability(),
        "p_high": _probability(),
        "confidence": _probability(),
        "priority": _text(),
        "action": _text(),
        "control": pa.Column(bool),
        "value_at_risk": pa.Column(float, nullable=True),
        "model_version": _text(),
        "run_id": _text(nullable=False),
        "campaign_id": _text(required=False),
        "channel": _text(required=False),
        "behaviour_tags": _text(required=False),  # comma-separated ids, e.g. "BT_001,BT_004"
        # The lifetime projection (rules.lifetime): null on days stored before it existed.
        "expected_months": pa.Column(float, nullable=True),
        "projected_value": pa.Column(float, nullable=True),
    },
)
"""Stored scores as a frame (``scores_frame``); an input of the KPIs."""

RUNS_SCHEMA = _frame_schema(
    "batch_runs",
    {
        "run_id": _text(nullable=False, unique=True),
        "as_of": pa.Column(_DATE, unique=True),
        "status": pa.Column(str, pa.Check.isin(list(RUN_STATUSES))),
        "started_at": pa.Column(_INSTANT),
        "finished_at": pa.Column(_INSTANT, nullable=True),
        "model_version": _text(),
        "rules_only": pa.Column(bool),
        "summary": pa.Column(object, nullable=True),
    },
)
"""Output of ``runs``: one row per batch day."""

__all__ = list(SCHEMAS)  # the names serving.core.frames hands out lazily: one list
