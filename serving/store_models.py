"""Tables and frame contracts of the state store (DESIGN §5).

Three kinds of definitions live here, shared by ``serving.store`` and ``serving.kpis``:

- the status tags and which of them rules may set (ST_005 is manual entry only);
- the SQLAlchemy models of the five tables (``status``, ``transitions``, ``overrides``, ``scores``,
  ``batch_runs``); the Alembic revisions in ``serving/migrations`` are a frozen copy of them and a
  test checks that the two agree;
- the pandera schemas of the frames that cross the store's boundary in both directions, and the
  ``RunRecord`` that describes one batch run.

Frames follow the project's time convention (``features.schemas``): dates (``as_of``, ``since``,
``expires``) are naive ``datetime64[us]`` at midnight, meaning 00:00 UTC of that day; instants
(``created_at``, ``updated_at``) are ``datetime64[us, UTC]``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

import pandas as pd
import pandera.pandas as pa
from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from features.schemas import AS_OF_DTYPE, UTC_INSTANT

STATUS_TAGS: dict[str, str] = {
    "ST_001": "Learning:Active",
    "ST_002": "Learning:Progressing",
    "ST_003": "Learning:Mastery",
    "ST_004": "Risk:Declining",
    "ST_005": "Risk:Re-engagement",
    "ST_006": "Status:Churned",
}
MANUAL_ONLY_TAG = "ST_005"
CHURNED_TAG = "ST_006"
RISK_TAG = "ST_004"
TAGS_AFTER_CHURN: frozenset[str] = frozenset({"ST_001", "ST_005"})
"""The only tags a person may move an ST_006 (churned) learner back to."""

RunStatus = Literal["running", "completed", "failed"]
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed")

_TAG_LIST_SQL = ", ".join(f"'{tag}'" for tag in STATUS_TAGS)
_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
_ID_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant on every backend (SQLite has no timezone type).

    Naive datetimes are refused on the way in: whose clock they came from is unknown.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; SQLite stores the naive UTC wall time."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware instant")
        in_utc = value.astimezone(UTC)
        return in_utc.replace(tzinfo=None) if dialect.name == "sqlite" else in_utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the backend gave back."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with named constraints, so migrations can refer to them."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Status(Base):
    """The current tag of each learner; always equal to the last transition's ``to_tag``."""

    __tablename__ = "status"
    __table_args__ = (CheckConstraint(f"tag IN ({_TAG_LIST_SQL})", name="tag"),)

    customer_id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True)
    tag: Mapped[str] = mapped_column(String(8))
    since: Mapped[date] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    run_id: Mapped[str | None] = mapped_column(String(_ID_LENGTH))


class Transition(Base):
    """The append-only audit log: one row per tag move, automatic (rule_id) or manual (actor)."""

    __tablename__ = "transitions"
    __table_args__ = (
        CheckConstraint(f"to_tag IN ({_TAG_LIST_SQL})", name="to_tag"),
        CheckConstraint("(rule_id IS NULL) <> (actor IS NULL)", name="rule_or_actor"),
        Index(None, "customer_id", "id"),
        Index(None, "run_id"),
        # Ids are never reused, even after a replaced day's rows are deleted.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(_ID_LENGTH))
    as_of: Mapped[date] = mapped_column(Date)
    from_tag: Mapped[str | None] = mapped_column(String(8))
    to_tag: Mapped[str] = mapped_column(String(8))
    rule_id: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    signal: Mapped[str | None] = mapped_column(String(32))
    p_churn: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(_ID_LENGTH))
    run_id: Mapped[str | None] = mapped_column(String(_ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Override(Base):
    """A person's decision to pin a learner's tag, optionally until ``expires`` (exclusive)."""

    __tablename__ = "overrides"
    __table_args__ = (
        CheckConstraint(f"tag IN ({_TAG_LIST_SQL})", name="tag"),
        # At most one open override per learner: a new one clears the previous one.
        Index(
            "uq_overrides_open_customer_id",
            "customer_id",
            unique=True,
            sqlite_where=text("cleared_at IS NULL"),
            postgresql_where=text("cleared_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(_ID_LENGTH))
    tag: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires: Mapped[date | None] = mapped_column(Date)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Score(Base):
    """One row per learner and batch day: the model's score and the intervention it implies."""

    __tablename__ = "scores"
    __table_args__ = (Index(None, "as_of"),)

    # The primary key is the (customer_id, as_of) uniqueness: one score per learner and day.
    customer_id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True)
    as_of: Mapped[date] = mapped_column(Date, primary_key=True)
    p_churn: Mapped[float | None] = mapped_column(Float)
    p_low: Mapped[float | None] = mapped_column(Float)
    p_high: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[str | None] = mapped_column(String(8))
    action: Mapped[str | None] = mapped_column(String(128))
    control: Mapped[bool] = mapped_column(Boolean)
    value_at_risk: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(_ID_LENGTH))
    run_id: Mapped[str] = mapped_column(String(_ID_LENGTH))


class BatchRun(Base):
    """One daily batch per ``as_of``: ``running`` until its transaction commits ``completed``."""

    __tablename__ = "batch_runs"
    __table_args__ = (
        UniqueConstraint("as_of"),
        CheckConstraint("status IN ('running', 'completed', 'failed')", name="status"),
    )

    run_id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True)
    as_of: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    model_version: Mapped[str | None] = mapped_column(String(_ID_LENGTH))
    rules_only: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


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
        "control": pa.Column(bool),
        "value_at_risk": pa.Column(float, nullable=True),
        "held": _text(),  # why a due move was held ("cooldown", "override"), else null
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
    },
)
"""Output of ``state_frame``: current tag per learner and the active override, if any."""

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
        "signal": _text(),
        "p_churn": _probability(),
        "confidence": _probability(),
        "model_version": _text(),
        "run_id": _text(),
        "created_at": pa.Column(_INSTANT),
    },
)
"""The audit log as a frame (``transitions_frame``, ``history``); an input of the KPIs."""

SCORES_SCHEMA = _frame_schema(
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
    "CHURNED_TAG",
    "DECISIONS_SCHEMA",
    "MANUAL_ONLY_TAG",
    "RISK_TAG",
    "RUNS_SCHEMA",
    "RUN_STATUSES",
    "SCORES_INPUT_SCHEMA",
    "SCORES_SCHEMA",
    "STATE_SCHEMA",
    "STATUS_TAGS",
    "TAGS_AFTER_CHURN",
    "TRANSITIONS_SCHEMA",
    "Base",
    "BatchRun",
    "Override",
    "RunRecord",
    "RunStatus",
    "Score",
    "Status",
    "Transition",
    "UTCDateTime",
    "validate_frame",
]
