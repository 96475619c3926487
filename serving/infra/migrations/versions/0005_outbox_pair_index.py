"""The outbox's indexes for the campaign planner's reads: window counts, pending pairs.

Revision ID: 0005_outbox_pair_index
Revises: 0004_lifetime_value
Create Date: 2027-02-01

- ``ix_outbox_customer_id_campaign_id_planned_on_state``: a batch day counts, for the pairs its
  decisions name, their messages planned in the campaign's cap window
  (``serving.infra.outbox_sql.window_counts``), and cancels the sendable ones of the pairs it
  cancels. Each pair is then a few entries of this index and no table row: through the
  ``customer_id`` index every message of the learner was a table row read.
- ``ix_outbox_state_due_on`` widened with (planned_on, customer_id, campaign_id): the planner's
  pending pairs (sendable messages planned before the day) come from the index alone, not a
  table row per sendable message; a dispatcher's claim reads the same (state, due_on) prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005_outbox_pair_index"
down_revision: str | Sequence[str] | None = "0004_lifetime_value"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAIRS = ("customer_id", "campaign_id", "planned_on", "state")
_DUE = ("state", "due_on")
_SENDABLE = (*_DUE, "planned_on", "customer_id", "campaign_id")


def _name(columns: tuple[str, ...]) -> str:
    return "ix_outbox_" + "_".join(columns)  # the tables' naming convention


def upgrade() -> None:
    """Index the outbox by pair; widen the (state, due_on) index."""
    op.create_index(_name(_PAIRS), "outbox", list(_PAIRS))
    op.create_index(_name(_SENDABLE), "outbox", list(_SENDABLE))
    op.drop_index(_name(_DUE), table_name="outbox")


def downgrade() -> None:
    """Back to 0004's indexes (the planner's reads then go through table rows again)."""
    op.create_index(_name(_DUE), "outbox", list(_DUE))
    op.drop_index(_name(_SENDABLE), table_name="outbox")
    op.drop_index(_name(_PAIRS), table_name="outbox")
