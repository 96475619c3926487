"""Create the state store: status, transitions, overrides, scores, batch_runs.

Revision ID: 0001_initial
Revises:
Create Date: 2026-01-20

A frozen copy of ``serving/infra/tables.py`` at this revision: later model changes get a new
revision, never an edit here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TAGS = "'ST_001', 'ST_002', 'ST_003', 'ST_004', 'ST_005', 'ST_006'"
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id_column() -> sa.Column:
    return sa.Column("id", _ID, primary_key=True, autoincrement=True)


def _instant(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the five tables and their indexes."""
    op.create_table(
        "status",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("tag", sa.String(8), nullable=False),
        sa.Column("since", sa.Date(), nullable=False),
        _instant("updated_at"),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.CheckConstraint(f"tag IN ({_TAGS})", name="ck_status_tag"),
        sa.PrimaryKeyConstraint("customer_id", name="pk_status"),
    )
    op.create_table(
        "transitions",
        _id_column(),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("from_tag", sa.String(8), nullable=True),
        sa.Column("to_tag", sa.String(8), nullable=False),
        sa.Column("rule_id", sa.String(16), nullable=True),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("signal", sa.String(32), nullable=True),
        sa.Column("p_churn", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        _instant("created_at"),
        sa.CheckConstraint(f"to_tag IN ({_TAGS})", name="ck_transitions_to_tag"),
        sa.CheckConstraint(
            "(rule_id IS NULL) <> (actor IS NULL)", name="ck_transitions_rule_or_actor"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_transitions"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_transitions_customer_id_id", "transitions", ["customer_id", "id"])
    op.create_index("ix_transitions_run_id", "transitions", ["run_id"])
    op.create_table(
        "overrides",
        _id_column(),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(8), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _instant("created_at"),
        sa.Column("expires", sa.Date(), nullable=True),
        _instant("cleared_at", nullable=True),
        sa.CheckConstraint(f"tag IN ({_TAGS})", name="ck_overrides_tag"),
        sa.PrimaryKeyConstraint("id", name="pk_overrides"),
    )
    op.create_index(
        "uq_overrides_open_customer_id",
        "overrides",
        ["customer_id"],
        unique=True,
        sqlite_where=sa.text("cleared_at IS NULL"),
        postgresql_where=sa.text("cleared_at IS NULL"),
    )
    op.create_table(
        "scores",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("p_churn", sa.Float(), nullable=True),
        sa.Column("p_low", sa.Float(), nullable=True),
        sa.Column("p_high", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("priority", sa.String(8), nullable=True),
        sa.Column("action", sa.String(128), nullable=True),
        sa.Column("control", sa.Boolean(), nullable=False),
        sa.Column("value_at_risk", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "as_of", name="pk_scores"),
    )
    op.create_index("ix_scores_as_of", "scores", ["as_of"])
    op.create_table(
        "batch_runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _instant("started_at"),
        _instant("finished_at", nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("rules_only", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed')", name="ck_batch_runs_status"
        ),
        sa.PrimaryKeyConstraint("run_id", name="pk_batch_runs"),
        sa.UniqueConstraint("as_of", name="uq_batch_runs_as_of"),
    )


def downgrade() -> None:
    """Drop every table of the store (its data with it)."""
    for table in ("batch_runs", "scores", "overrides", "transitions", "status"):
        op.drop_table(table)
