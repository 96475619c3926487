"""One outbox index led by the learner instead of two: a first load builds one sort less.

Revision ID: 0006_outbox_learner_index
Revises: 0005_outbox_pair_index
Create Date: 2027-02-08

``ix_outbox_customer_id_campaign_id_planned_on_state`` (0005: the planner's window counts and
cancellations) widened with ``sent_at`` replaces ``ix_outbox_customer_id_sent_at``: what a
learner was sent since an instant (``outbox_sql.sent_times``) is then read from the learner's
entries of the wider index (a learner holds a few messages), still no table row. A first load
builds its secondary indexes after the rows (``sql.indexes_after``): one sort of the outbox less,
and a steady day's messages go into one index less.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_outbox_learner_index"
down_revision: str | Sequence[str] | None = "0005_outbox_pair_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAIRS = ("customer_id", "campaign_id", "planned_on", "state")
_LEARNER = (*_PAIRS, "sent_at")
_SENT = ("customer_id", "sent_at")


def _name(columns: tuple[str, ...]) -> str:
    return "ix_outbox_" + "_".join(columns)  # the tables' naming convention


def upgrade() -> None:
    """The pair index widened with sent_at; the (customer_id, sent_at) index dropped."""
    op.create_index(_name(_LEARNER), "outbox", list(_LEARNER))
    op.drop_index(_name(_PAIRS), table_name="outbox")
    op.drop_index(_name(_SENT), table_name="outbox")


def downgrade() -> None:
    """Back to 0005's two learner-led indexes."""
    op.create_index(_name(_SENT), "outbox", list(_SENT))
    op.create_index(_name(_PAIRS), "outbox", list(_PAIRS))
    op.drop_index(_name(_LEARNER), table_name="outbox")
