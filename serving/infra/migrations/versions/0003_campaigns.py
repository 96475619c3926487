"""Campaigns: the transactional outbox, campaign feedback, and the campaign of each score row.

Revision ID: 0003_campaigns
Revises: 0002_data_clock
Create Date: 2026-12-03

- ``outbox``: one row per planned campaign message (``serving.core.messages.MESSAGE_COLUMNS``),
  written in the batch day's transaction, and what dispatching it did (state, tries, last
  error, next attempt, rendered subject and body, the claim of the dispatcher sending it).
- ``campaign_feedback``: delivered / opened / clicked / converted, once per message and kind.
- ``scores.campaign_id`` / ``channel`` / ``behaviour_tags``: what the decision carried; null on
  the rows of days decided before campaigns existed.

A frozen copy of ``serving/infra/tables.py`` at this revision, like 0001 and 0002.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_campaigns"
down_revision: str | Sequence[str] | None = "0002_data_clock"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = "'pending', 'sent', 'failed', 'dead', 'suppressed', 'cancelled'"
_CHANNELS = "'email', 'push', 'in_app', 'csm_task', 'webhook'"
_KINDS = "'delivered', 'opened', 'clicked', 'converted'"
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instant(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _outbox_columns() -> list[sa.Column]:
    return [
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("planned_on", sa.Date(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("template_id", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("control", sa.Boolean(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _instant("next_attempt_at", nullable=True),
        _instant("sent_at", nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        _instant("claimed_at", nullable=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        _instant("created_at"),
    ]


def upgrade() -> None:
    """Create the outbox and feedback tables; add the campaign columns to scores."""
    op.create_table(
        "outbox",
        *_outbox_columns(),
        sa.CheckConstraint(f"state IN ({_STATES})", name="ck_outbox_state"),
        sa.CheckConstraint(f"channel IN ({_CHANNELS})", name="ck_outbox_channel"),
        sa.PrimaryKeyConstraint("message_id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_state_due_on", "outbox", ["state", "due_on"])
    op.create_index("ix_outbox_customer_id_sent_at", "outbox", ["customer_id", "sent_at"])
    op.create_index("ix_outbox_planned_on", "outbox", ["planned_on"])
    op.create_table(
        "campaign_feedback",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _instant("recorded_at"),
        sa.Column("source", sa.String(64), nullable=False),
        sa.CheckConstraint(f"kind IN ({_KINDS})", name="ck_campaign_feedback_kind"),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_feedback"),
        sa.UniqueConstraint("message_id", "kind", name="uq_campaign_feedback_message_id_kind"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("campaign_id", sa.String(16), nullable=True))
        batch.add_column(sa.Column("channel", sa.String(16), nullable=True))
        batch.add_column(sa.Column("behaviour_tags", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the campaign columns and tables (the messages and feedback with them)."""
    with op.batch_alter_table("scores") as batch:
        for column in ("behaviour_tags", "channel", "campaign_id"):
            batch.drop_column(column)
    op.drop_table("campaign_feedback")
    for index in ("planned_on", "customer_id_sent_at", "state_due_on"):
        op.drop_index(f"ix_outbox_{index}", table_name="outbox")
    op.drop_table("outbox")
