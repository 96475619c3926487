"""Lifetime value: each score row's expected remaining months and projected value.

Revision ID: 0004_lifetime_value
Revises: 0003_campaigns
Create Date: 2027-01-15

- ``scores.expected_months`` / ``projected_value``: the lifetime projection of ``rules.lifetime``
  (expected months over the capped horizon, mrr x those months); null on the rows of days
  decided before it existed, and for learners without a score or (the value) without an mrr.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_lifetime_value"
down_revision: str | Sequence[str] | None = "0003_campaigns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("expected_months", "projected_value")


def upgrade() -> None:
    """Add the two nullable columns to scores."""
    with op.batch_alter_table("scores") as batch:
        for column in _COLUMNS:
            batch.add_column(sa.Column(column, sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop them (the projections with them)."""
    with op.batch_alter_table("scores") as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column)
