"""Overrides on the data's clock, override kinds, recorded clears, and rule reasons.

Revision ID: 0002_data_clock
Revises: 0001_initial
Create Date: 2026-12-02

- ``overrides.kind``: ``campaign`` (ST_005, the exit rules keep running) or ``hold``. Existing
  ST_005 overrides become campaigns (those without expiry get the default 28-day box: they
  never ended before), every other one a hold (what they did before).
- ``overrides.effective_as_of``: the first data day an override applies to. Before this
  revision an override took effect on the wall-clock day it was recorded, so existing rows get
  the UTC date of ``created_at``. ``cleared_as_of`` likewise gets the date of ``cleared_at``.
- ``overrides.cleared_by`` / ``clear_reason``: who ended an override early, and why.
- ``transitions.why``: the facts that made a rule's condition true, in words.

A frozen copy of ``serving/infra/tables.py`` at this revision, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_data_clock"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc_date(column: str) -> str:
    """SQL for the UTC calendar day of an instant column, per dialect."""
    if op.get_bind().dialect.name == "postgresql":
        return f"({column} AT TIME ZONE 'UTC')::date"
    return f"date({column})"  # SQLite stores the naive UTC wall time


def _days_after(column: str, days: int) -> str:
    """SQL for the date ``days`` after a date column, per dialect."""
    if op.get_bind().dialect.name == "postgresql":
        return f"{column} + {days}"
    return f"date({column}, '+{days} days')"


def upgrade() -> None:
    """Add the columns, fill them from what the rows already say, then constrain them."""
    with op.batch_alter_table("overrides") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("effective_as_of", sa.Date(), nullable=True))
        batch.add_column(sa.Column("cleared_as_of", sa.Date(), nullable=True))
        batch.add_column(sa.Column("cleared_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("clear_reason", sa.Text(), nullable=True))
    op.execute(
        "UPDATE overrides SET "
        "kind = CASE WHEN tag = 'ST_005' THEN 'campaign' ELSE 'hold' END, "
        f"effective_as_of = {_utc_date('created_at')}"
    )
    op.execute(
        f"UPDATE overrides SET cleared_as_of = {_utc_date('cleared_at')} "
        "WHERE cleared_at IS NOT NULL"
    )
    # An old expiry on or before the day an override began never applied: it becomes the day
    # after, so the new CHECK holds. An old campaign without expiry never ended (R08 could not
    # fire under it): it gets the default box of 28 days.
    op.execute(
        f"UPDATE overrides SET expires = {_days_after('effective_as_of', 1)} "
        "WHERE expires <= effective_as_of"
    )
    op.execute(
        f"UPDATE overrides SET expires = {_days_after('effective_as_of', 28)} "
        "WHERE kind = 'campaign' AND expires IS NULL"
    )
    with op.batch_alter_table("overrides") as batch:
        batch.alter_column("kind", existing_type=sa.String(16), nullable=False)
        batch.alter_column("effective_as_of", existing_type=sa.Date(), nullable=False)
        batch.create_check_constraint(op.f("ck_overrides_kind"), "kind IN ('campaign', 'hold')")
        batch.create_check_constraint(
            op.f("ck_overrides_expires"), "expires IS NULL OR expires > effective_as_of"
        )
    with op.batch_alter_table("transitions") as batch:
        batch.add_column(sa.Column("why", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the new columns (their values with them); every row of 0001 stays."""
    with op.batch_alter_table("transitions") as batch:
        batch.drop_column("why")
    with op.batch_alter_table("overrides") as batch:
        batch.drop_constraint(op.f("ck_overrides_expires"), type_="check")
        batch.drop_constraint(op.f("ck_overrides_kind"), type_="check")
        for column in ("clear_reason", "cleared_by", "cleared_as_of", "effective_as_of", "kind"):
            batch.drop_column(column)
