"""``serving.infra.sql`` on SQLite and PostgreSQL: ``temporary_table``, the keys table the
store's bulk joins read (its rows while the block runs, gone after it, after a failing statement
too), and ``bulk_insert``'s first load, whose secondary indexes are built after its rows
(``indexes_after``)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import event, inspect
from sqlalchemy.exc import DBAPIError

from serving.infra.sql import bulk_insert, indexes_after, temporary_table
from serving.infra.store import StateStore
from serving.infra.tables import Transition

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


TRANSITIONS = Transition.__table__
SECONDARY_INDEXES = sorted(str(index.name) for index in TRANSITIONS.indexes)


def _moves(*customer_ids: str) -> pd.DataFrame:
    """Automatic transitions of ``customer_ids`` into ST_001 (the columns a batch writes)."""
    count = len(customer_ids)
    return pd.DataFrame(
        {
            "customer_id": list(customer_ids), "as_of": [date(2026, 1, 5)] * count,
            "to_tag": ["ST_001"] * count, "rule_id": ["R01"] * count,
            "reason": ["new learner"] * count, "run_id": ["d1"] * count,
            "created_at": [datetime(2026, 1, 5, tzinfo=UTC)] * count,
        }
    )  # fmt: skip


def _statements_of(store: StateStore) -> list[str]:
    """Every statement the store's engine sends from now on, as sent."""
    sent: list[str] = []
    event.listen(
        store._engine, "before_cursor_execute", lambda *args: sent.append(args[2]), retval=False
    )
    return sent


def _transition_indexes(store: StateStore) -> list[str]:
    with store._connect() as conn:
        return sorted(index["name"] for index in inspect(conn).get_indexes("transitions"))


def test_a_first_load_builds_the_secondary_indexes_after_its_rows(store):
    # Given an empty transitions table, and every statement recorded
    sent = _statements_of(store)
    # When a batch of moves goes in
    with store._writer() as conn:
        bulk_insert(conn, TRANSITIONS, _moves("a", "b", "c"))
    # Then each secondary index was dropped before the rows and built again after them
    dropped = [sql for sql in sent if sql.lstrip().startswith("DROP INDEX")]
    created = [sql for sql in sent if sql.lstrip().startswith("CREATE INDEX")]
    assert len(dropped) == len(created) == len(SECONDARY_INDEXES) == 2
    assert _transition_indexes(store) == SECONDARY_INDEXES
    with store._connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM transitions").scalar() == 3


def test_a_table_holding_more_rows_than_come_keeps_its_indexes(store):
    # Given transitions holding three rows
    with store._writer() as conn:
        bulk_insert(conn, TRANSITIONS, _moves("a", "b", "c"))
    sent = _statements_of(store)
    # When two more go in
    with store._writer() as conn:
        bulk_insert(conn, TRANSITIONS, _moves("d", "e"))
    # Then no index was touched: inserting into them costs less than building them again
    assert not [sql for sql in sent if "INDEX" in sql]
    assert _transition_indexes(store) == SECONDARY_INDEXES


def test_a_failing_first_load_leaves_the_indexes_as_they_were(store):
    # Given an empty transitions table
    # When the block of a first load fails after the indexes were dropped
    with (
        pytest.raises(RuntimeError),
        store._writer() as conn,
        indexes_after(conn, TRANSITIONS, 3),
    ):
        assert _transition_indexes(store) == SECONDARY_INDEXES  # another connection's view
        raise RuntimeError("the day failed")
    # Then the rollback restored them (DDL is transactional on both databases)
    assert _transition_indexes(store) == SECONDARY_INDEXES
