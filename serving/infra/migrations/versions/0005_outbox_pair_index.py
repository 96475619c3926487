"""The outbox's (learner, campaign) index: the planner's window counts of the day's pairs.

Revision ID: 0005_outbox_pair_index
Revises: 0004_lifetime_value
Create Date: 2027-02-01

- ``ix_outbox_customer_id_campaign_id_planned_on_state``: a batch day counts, for the pairs its
  decisions name, their messages planned in the campaign's cap window
  (``serving.infra.outbox_sql.window_counts``), and cancels the sendable ones of the pairs it
  cancels. Each pair is then a few entries of this index and no table row: through the
  ``customer_id`` index every message of the learner was a table row read.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005_outbox_pair_index"
down_revision: str | Sequence[str] | None = "0004_lifetime_value"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_outbox_customer_id_campaign_id_planned_on_state"


def upgrade() -> None:
    """Index the outbox by learner, campaign, planned day and state."""
    op.create_index(_NAME, "outbox", ["customer_id", "campaign_id", "planned_on", "state"])


def downgrade() -> None:
    """Drop the index (the planner's reads fall back to the ``customer_id`` index)."""
    op.drop_index(_NAME, table_name="outbox")
