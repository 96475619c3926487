"""Frames and records that cross the state store's boundary, in both directions (DESIGN §5).

pandera schemas of the frames the store takes (decisions, scores) and gives (state, audit log,
stored scores, batch runs), and ``RunRecord``, one batch run as stored. Frames follow the
project's time convention (``features.schemas``): dates (``as_of``, ``since``, ``expires``) are
naive ``datetime64[us]`` at midnight, meaning 00:00 UTC of that day; instants (``created_at``,
``updated_at``) are ``datetime64[us, UTC]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pydantic import BaseModel, ConfigDict

from features.schemas import AS_OF_DTYPE, UTC_INSTANT
from serving.core.tags import STATUS_TAGS

RunStatus = Literal["running", "completed", "failed"]
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed")


class RunRecord(BaseModel):
    """What ``apply_batch`` returns: the batch run as stored.

    When ``run_id`` differs from the one the caller passed, the day was already completed by an
    earlier run and nothing was written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    as_of: date
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    model_version: str | None
    rules_only: bool
    summary: dict[str, Any] | None


_DATE = AS_OF_DTYPE
_INSTANT = UTC_INSTANT
_TAG_CHECK = pa.Check.isin(list(STATUS_TAGS))
_PROBABILITY = pa.Check.in_range(0.0, 1.0)


def validate_frame(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Validate (and coerce) a frame; a failure is a ValueError naming the frame and column."""
    try:
        return schema.validate(frame)
    except (pa.errors.SchemaError, pa.errors.SchemaErrors) as error:
        raise ValueError(f"{schema.name}: {error}") from None


def stored_frame(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """A frame of rows the store wrote itself, typed as ``validate_frame`` types it.

    Only the column set is checked and each column coerced to the schema's type: the value
    checks (tags, probabilities, uniqueness) guard what goes into the store, whose constraints
    and writers keep them, so checking them again on every read only costs time (the pandera
    pass took ~0.1 s of each ``lstep status`` and ``kpis``). ``tests/serving/core`` compares
    the two on every frame this is used for.

    Raises:
        ValueError: a required column is missing or an unknown one present (names both).
    """
    required = {name for name, column in schema.columns.items() if column.required}
    missing, unknown = required - set(frame.columns), set(frame.columns) - set(schema.columns)
    if missing or unknown:
        raise ValueError(
            f"{schema.name}: missing columns {sorted(missing)}, unexpected {sorted(unknown)}"
        )
    columns = {name: schema.columns[name].dtype.coerce(frame[name]) for name in frame.columns}
    return pd.DataFrame(columns, index=frame.index)


def _text(nullable: bool = True, **kwargs: Any) -> pa.Column:
    return pa.Column(str, nullable=nullable, **kwargs)


def _tag(nullable: bool) -> pa.Column:
    return pa.Column(str, _TAG_CHECK, nullable=nullable)


def _probability() -> pa.Column:
    return pa.Column(float, _PROBABILITY, nullable=True)


def _frame_schema(name: str, columns: dict[str, pa.Column]) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(columns, name=name, strict=True, coerce=True)


DECISIONS_SCHEMA = _frame_schema(
    "decisions",
    {
        "customer_id": _text(nullable=False, unique=True),
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
        "customer_id": _text(nullable=False, unique=True),
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
        "customer_id": _text(nullable=False, unique=True),
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


def empty_state() -> pd.DataFrame:
    """A state frame without learners (a fresh store): every learner is new."""
    columns = {name: pd.Series(dtype=object) for name in STATE_SCHEMA.columns}
    return validate_frame(pd.DataFrame(columns), STATE_SCHEMA)


_STATE_TEXT = ("customer_id", "tag", "override_tag", "override_kind")
"""The state's text columns; the others are days, ``datetime64[ns]`` once validated."""


def state_frame_of_rows(rows: Iterable[Sequence[Any]]) -> pd.DataFrame:
    """The ``STATE_SCHEMA`` frame of query rows, without its pandera pass (a few learners).

    Validating costs ~7 ms however few the rows: the online scorer reads the state of one or
    a few learners per request with a compiled query (``StateStore.state_of``). The dtypes are
    those validation gives (``tests/serving/infra`` compares the two); the values are the
    store's own, checked by its constraints when written.

    Args:
        rows: (customer_id, tag, since, override_tag, override_expires, override_kind) tuples;
            days are ``date`` objects, missing values None.
    """
    columns = list(zip(*rows, strict=True)) or [()] * len(STATE_SCHEMA.columns)
    values = dict(zip(STATE_SCHEMA.columns, columns, strict=True))
    frame = {
        name: pd.array(values[name], dtype="str")
        if name in _STATE_TEXT
        else np.array(values[name], dtype="datetime64[D]").astype("datetime64[ns]")
        for name in STATE_SCHEMA.columns
    }
    return pd.DataFrame(frame)


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

__all__ = [
    "DECISIONS_SCHEMA",
    "OVERRIDES_SCHEMA",
    "RUNS_SCHEMA",
    "RUN_STATUSES",
    "SCORES_INPUT_SCHEMA",
    "STATE_SCHEMA",
    "STORED_SCORES_SCHEMA",
    "TRANSITIONS_SCHEMA",
    "RunRecord",
    "RunStatus",
    "empty_state",
    "state_frame_of_rows",
    "stored_frame",
    "validate_frame",
]
