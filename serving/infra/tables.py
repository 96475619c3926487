"""The state store's tables as SQLAlchemy models (DESIGN §5).

``status``, ``transitions``, ``overrides``, ``scores`` and ``batch_runs``; the campaign
``outbox`` and ``campaign_feedback`` (issue 12). The Alembic revisions
in ``serving/infra/migrations`` are a frozen copy of these models, and a test checks that the two
agree. Dates are ``Date`` columns; instants are ``UTCDateTime`` (timezone-aware on every backend).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

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

from serving.core.messages import CHANNELS, FEEDBACK_KINDS, MESSAGE_STATES
from serving.core.tags import OVERRIDE_KINDS, STATUS_TAGS

_TAG_LIST_SQL = ", ".join(f"'{tag}'" for tag in STATUS_TAGS)
OVERRIDE_KINDS_SQL = ", ".join(f"'{kind}'" for kind in OVERRIDE_KINDS)


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


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
    # The facts that made a rule's condition true, in words (None for a manual move).
    why: Mapped[str | None] = mapped_column(Text)
    signal: Mapped[str | None] = mapped_column(String(32))
    p_churn: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(_ID_LENGTH))
    run_id: Mapped[str | None] = mapped_column(String(_ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Override(Base):
    """A person's decision about a learner's tag, on the data's clock.

    ``kind`` is ``campaign`` (a retention campaign in ST_005: the exit rules keep running) or
    ``hold`` (automatic moves other than to a terminal tag are held). It applies to the data days
    ``effective_as_of <= as_of < expires`` and before ``cleared_as_of``; ``created_at`` and
    ``cleared_at`` are the wall-clock instants it was recorded and ended (audit only).
    """

    __tablename__ = "overrides"
    __table_args__ = (
        CheckConstraint(f"tag IN ({_TAG_LIST_SQL})", name="tag"),
        CheckConstraint(f"kind IN ({OVERRIDE_KINDS_SQL})", name="kind"),
        CheckConstraint("expires IS NULL OR expires > effective_as_of", name="expires"),
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
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    effective_as_of: Mapped[date] = mapped_column(Date)
    expires: Mapped[date | None] = mapped_column(Date)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_as_of: Mapped[date | None] = mapped_column(Date)
    cleared_by: Mapped[str | None] = mapped_column(String(128))
    clear_reason: Mapped[str | None] = mapped_column(Text)


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
    # The campaign the decision triggered and its channel; the learner's behaviour tags as
    # comma-separated ids (BT_001,BT_004). Null on days decided before campaigns existed.
    campaign_id: Mapped[str | None] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(16))
    behaviour_tags: Mapped[str | None] = mapped_column(Text)
    # The lifetime projection (rules.lifetime): expected remaining months over the capped
    # horizon and mrr x those months. Null on days decided before it existed.
    expected_months: Mapped[float | None] = mapped_column(Float)
    projected_value: Mapped[float | None] = mapped_column(Float)


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


class Outbox(Base):
    """One planned campaign message (``serving.core.messages``) and what delivering it did.

    Written with its batch day (same transaction); ``lstep dispatch`` claims due rows
    (``claimed_by``/``claimed_at``: a lease, so two dispatchers never send the same row and a
    dispatcher killed mid-send leaves the row to be claimed again), sends them and records the
    attempt: ``sent`` with the rendered subject and body, ``failed`` with the error and when to
    try again, ``dead`` after the last try.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(f"state IN ({_sql_list(MESSAGE_STATES)})", name="state"),
        CheckConstraint(f"channel IN ({_sql_list(CHANNELS)})", name="channel"),
        Index(None, "state", "due_on", "planned_on", "customer_id", "campaign_id"),
        # Window counts, cancellations and what a learner was sent (migration 0006).
        Index(None, "customer_id", "campaign_id", "planned_on", "state", "sent_at"),
        Index(None, "planned_on"),
    )

    message_id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True)
    planned_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    customer_id: Mapped[str] = mapped_column(String(_ID_LENGTH))
    campaign_id: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    template_id: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(32))
    control: Mapped[bool] = mapped_column(Boolean)
    context: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    tries: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(_ID_LENGTH))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    run_id: Mapped[str] = mapped_column(String(_ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignFeedback(Base):
    """What happened to a message after it left: delivered, opened, clicked, converted.

    Once per message and kind: a repeated event changes nothing.
    """

    __tablename__ = "campaign_feedback"
    __table_args__ = (
        CheckConstraint(f"kind IN ({_sql_list(FEEDBACK_KINDS)})", name="kind"),
        UniqueConstraint("message_id", "kind"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(_ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(64))


def column_names(model: type[Base]) -> list[str]:
    """A table's column names, in table order."""
    return [column.name for column in model.__table__.columns]


__all__ = [
    "Base",
    "BatchRun",
    "CampaignFeedback",
    "Outbox",
    "Override",
    "Score",
    "Status",
    "Transition",
    "UTCDateTime",
    "column_names",
]
