"""``serving.infra.sql.temporary_table``, the keys table the store's bulk joins read, on SQLite
and PostgreSQL: its rows while the block runs, gone after it, after a failing statement too."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from serving.infra.sql import temporary_table
from serving.infra.store import StateStore

KINDS = {"customer_id": "VARCHAR(64)", "campaign_id": "VARCHAR(16)"}
ROWS = [("a", "CP_01"), ("b", "CP_02"), ("c", "CP_01")]


def test_the_rows_are_there_in_the_block_and_the_table_gone_after(store):
    # Given a writer's transaction
    with store._writer() as conn:
        # When a block reads the temporary table
        with temporary_table(conn, "some_pairs", KINDS, ROWS):
            read = conn.exec_driver_sql("SELECT * FROM some_pairs ORDER BY customer_id").all()
        # Then it held the rows, and the same name is free again after the block
        assert [tuple(row) for row in read] == ROWS
        with temporary_table(conn, "some_pairs", KINDS, ROWS[:1]):
            count = conn.exec_driver_sql("SELECT count(*) FROM some_pairs").scalar()
        assert count == 1


def test_a_failing_statement_in_the_block_leaves_no_table_behind_on_sqlite(tmp_path):
    # (PostgreSQL's rollback drops the table with the failed transaction: SQLite's case alone)
    # Given a block whose statement fails
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store, store._writer() as conn:
        with pytest.raises(DBAPIError), temporary_table(conn, "some_pairs", KINDS, ROWS):
            conn.exec_driver_sql("SELECT no_such_column FROM some_pairs")
        # Then the table went with the error: the name can be created again on the connection
        with temporary_table(conn, "some_pairs", KINDS, ROWS):
            assert conn.exec_driver_sql("SELECT count(*) FROM some_pairs").scalar() == 3
