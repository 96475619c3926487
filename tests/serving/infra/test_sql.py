"""``serving.infra.sql`` on SQLite and PostgreSQL: ``temporary_table``, the keys table the
store's bulk joins read (its rows while the block runs, gone after it, after a failing statement
too), ``indexes_after``, which builds the outbox's secondary indexes after a first load's
messages, ``wal_synced_commit``, a batch's commit on SQLite (its WAL synced, copied after), and
``checks_once``: bulk rows failing a CHECK are refused, on SQLite by one check of their distinct
values before the rows go in without SQLite's per-row checks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import psycopg
import pytest
from sqlalchemy import Connection, event, inspect
from sqlalchemy.exc import DBAPIError, IntegrityError

from serving.core.outbox import outbox_rows
from serving.infra.outbox_sql import insert_messages
from serving.infra.sql import (
    SORT_THREADS_MAX,
    bulk_insert,
    indexes_after,
    open_engine,
    sort_threads,
    temporary_table,
)
from serving.infra.store import StateStore
from serving.infra.tables import Outbox, Transition
from tests.serving.batches import FIRST_DAY, apply
from tests.serving.outbox_fixtures import messages

KINDS = {"customer_id": "VARCHAR(64)", "campaign_id": "VARCHAR(16)"}
ROWS = [("a", "CP_01"), ("b", "CP_02"), ("c", "CP_01")]
DAY = date(2026, 1, 5)
NOW = datetime(2026, 1, 5, 6, tzinfo=UTC)


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


@pytest.mark.parametrize(("cores", "helpers"), [("3", 3), ("1", 1), ("20", SORT_THREADS_MAX)])
def test_a_sqlite_store_connection_sorts_with_a_helper_thread_per_usable_core(
    tmp_path, monkeypatch, cores, helpers
):
    # Given a process allowed `cores` CPUs (LSTEP_THREADS) and a SQLite store engine
    monkeypatch.setenv("LSTEP_THREADS", cores)
    engine = open_engine(f"sqlite:///{tmp_path / 'state.db'}")

    # When a connection is opened
    with engine.connect() as conn:
        threads = conn.exec_driver_sql("PRAGMA threads").scalar_one()

    # Then its large sorts (a first load's CREATE INDEX) may use a helper per core, at most
    # SQLite's 8, not SQLite's default of none
    assert threads == sort_threads() == helpers
    engine.dispose()


def test_a_failing_statement_in_the_block_leaves_no_table_behind_on_sqlite(tmp_path):
    # (PostgreSQL's rollback drops the table with the failed transaction: SQLite's case alone)
    # Given a block whose statement fails
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store, store._writer() as conn:
        with pytest.raises(DBAPIError), temporary_table(conn, "some_pairs", KINDS, ROWS):
            conn.exec_driver_sql("SELECT no_such_column FROM some_pairs")
        # Then the table went with the error: the name can be created again on the connection
        with temporary_table(conn, "some_pairs", KINDS, ROWS):
            assert conn.exec_driver_sql("SELECT count(*) FROM some_pairs").scalar() == 3


OUTBOX = Outbox.__table__
TRANSITIONS = Transition.__table__
SECONDARY_INDEXES = sorted(str(index.name) for index in OUTBOX.indexes)


def _statements_of(store: StateStore) -> list[str]:
    """Every statement the store's engine sends from now on, as sent."""
    sent: list[str] = []
    event.listen(store._engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    return sent


def _outbox_indexes(conn: Connection) -> list[str]:
    return sorted(index["name"] for index in inspect(conn).get_indexes("outbox"))


def _starting(sent: list[str], words: str) -> list[str]:
    return [sql for sql in sent if sql.lstrip().startswith(words)]


def test_a_first_load_inserts_without_the_secondary_indexes_and_builds_them_after(store):
    # Given an empty outbox
    with store._writer() as conn:
        # When a block inserts more rows than it holds
        with indexes_after(conn, OUTBOX, 3):
            inside = _outbox_indexes(conn)
        # Then the block ran without the secondary indexes, and they are all there after it
        assert inside == []
        assert _outbox_indexes(conn) == SECONDARY_INDEXES


def test_the_days_messages_go_into_an_empty_outbox_before_its_indexes(store):
    # Given an empty outbox, and every statement recorded
    sent = _statements_of(store)
    rows = outbox_rows(DAY, messages(DAY, ["a", "b", "c"]), "d1", NOW)
    # When a day's messages go in
    with store._writer() as conn:
        inserted = insert_messages(conn, rows)
    # Then each secondary index was dropped before the rows and built again after them
    assert inserted == 3 and len(store.outbox_frame()) == 3
    assert len(_starting(sent, "DROP INDEX")) == len(_starting(sent, "CREATE INDEX")) == 3
    with store._connect() as conn:
        assert _outbox_indexes(conn) == SECONDARY_INDEXES


def test_an_outbox_holding_more_rows_than_come_keeps_its_indexes(store):
    # Given an outbox holding three messages
    with store._writer() as conn:
        insert_messages(conn, outbox_rows(DAY, messages(DAY, ["a", "b", "c"]), "d1", NOW))
    sent = _statements_of(store)
    # When two more go in, one of them there already
    with store._writer() as conn:
        inserted = insert_messages(conn, outbox_rows(DAY, messages(DAY, ["c", "d"]), "d1", NOW))
    # Then only the new one went in, and no index was touched (inserting into them is cheaper)
    assert inserted == 1 and len(store.outbox_frame()) == 4
    assert not [sql for sql in sent if "INDEX" in sql]


LEARNERS = [f"learner_{number:02d}" for number in range(12)]


def _placed(conn: Connection, column: str) -> list[str]:
    """``column`` of the outbox's rows in the order they were stored (rowid, ctid)."""
    stored = "ctid" if conn.dialect.name == "postgresql" else "rowid"
    return list(conn.exec_driver_sql(f"SELECT {column} FROM outbox ORDER BY {stored}").scalars())


def test_messages_go_into_an_outbox_with_its_indexes_in_learner_order(store):
    # Given an outbox holding the learners' messages of the day before, and a day whose
    # message ids are not in learner order
    before = DAY - timedelta(days=1)
    with store._writer() as conn:
        insert_messages(conn, outbox_rows(before, messages(before, LEARNERS), "d0", NOW))
    rows = outbox_rows(DAY, messages(DAY, LEARNERS), "d1", NOW)
    assert rows.sort_values("message_id")["customer_id"].tolist() != LEARNERS
    # When the day's messages go in (the indexes kept: the outbox holds as many rows as come)
    with store._writer() as conn:
        insert_messages(conn, rows)
        placed = _placed(conn, "customer_id")[len(LEARNERS) :]
    # Then they were stored learner by learner: each index led by customer_id is written in
    # its order (the message_id hash would put every row at a random place of them)
    assert placed == LEARNERS


def test_a_first_load_goes_in_message_id_order(store):
    # Given an empty outbox, and a day whose learners are not in message id order
    rows = outbox_rows(DAY, messages(DAY, LEARNERS), "d1", NOW)
    # When the day's messages go in (the secondary indexes built after them)
    with store._writer() as conn:
        insert_messages(conn, rows)
        placed = _placed(conn, "message_id")
    # Then they were stored in primary-key order, the one index written row by row
    assert placed == sorted(rows["message_id"])


def test_a_failing_first_load_leaves_the_indexes_as_they_were(store):
    # Given an empty outbox
    # When the block of a first load fails after the indexes were dropped
    with (
        pytest.raises(RuntimeError),
        store._writer() as conn,
        indexes_after(conn, OUTBOX, 3),
    ):
        raise RuntimeError("the day failed")
    # Then the rollback restored them (DDL is transactional on both databases)
    with store._connect() as conn:
        assert _outbox_indexes(conn) == SECONDARY_INDEXES


def test_a_batch_commit_syncs_its_wal_and_a_thread_copies_it_into_the_file(tmp_path):
    # Given a SQLite store whose every statement (and the checkpoint thread's) is recorded
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", scores_dir=tmp_path / "scores")
    statements: list[str] = []
    event.listen(
        store._engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(statements.append)
    )
    store._engine.dispose()  # the pool's connections are made again, traced
    # When a batch day is applied and the store closed
    apply(store, DAY, FIRST_DAY)
    store.close()
    # Then the day's transaction committed with the WAL synced and no checkpoint of its own
    commit = statements.index("COMMIT", statements.index("PRAGMA synchronous=FULL"))
    assert "PRAGMA wal_autocheckpoint=0" in statements[:commit]
    # And the connection got the store's settings back after it
    assert statements[commit + 1 : commit + 3] == [
        "PRAGMA wal_autocheckpoint=1000",
        "PRAGMA synchronous=NORMAL",
    ]
    # And the checkpoint ran after the commit, leaving nothing in the WAL to copy
    assert "PRAGMA wal_checkpoint(PASSIVE)" in statements[commit:]
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone() == (0, 0, 0)
    # And the day reads back whole
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}", scores_dir=tmp_path / "scores") as again:
        assert len(again.state_frame()) == len(FIRST_DAY)
        assert len(again.scores_frame(DAY)) == len(FIRST_DAY)


def _transitions(to_tags: list[str], actors: list[str | None]) -> pd.DataFrame:
    """Automatic (rule R01) or manual (an actor) transitions of as many learners as tags."""
    count = len(to_tags)
    return pd.DataFrame(
        {
            "customer_id": [f"learner_{number:02d}" for number in range(count)],
            "as_of": [DAY] * count,
            "from_tag": [None] * count,
            "to_tag": to_tags,
            "rule_id": [None if actor else "R01" for actor in actors],
            "actor": actors,
            "reason": ["a reason"] * count,
            "run_id": ["d1"] * count,
            "created_at": [NOW] * count,
        }
    )


REFUSED = (IntegrityError, psycopg.IntegrityError)


def test_rows_failing_a_check_are_refused_and_none_goes_in(store):
    # Given a day's messages, one of them in a state the outbox does not know, and
    # transitions, one of them with neither a rule nor an actor
    rows = outbox_rows(DAY, messages(DAY, ["a", "b", "c"]), "d1", NOW)
    rows.loc[1, "state"] = "lost"
    moves = _transitions(["ST_001", "ST_002"], [None, None])
    moves.loc[1, "rule_id"] = None
    # When they go in, Then each insert is refused naming the check (SQLite: before any row;
    # PostgreSQL's COPY raises the driver's own error)
    with pytest.raises(REFUSED, match="state"), store._writer() as conn:
        insert_messages(conn, rows)
    with pytest.raises(REFUSED, match="rule_or_actor"), store._writer() as conn:
        bulk_insert(conn, TRANSITIONS, moves)
    # And nothing was written
    assert store.outbox_frame().empty and store.transitions_frame().empty


def test_rows_passing_the_checks_go_in_with_missing_values_where_allowed(store):
    # Given transitions by a rule (no actor) and by an actor (no rule): a CHECK passes NULLs
    moves = _transitions(["ST_001", "ST_002", "ST_003"], [None, "ops", None])
    # When they go in
    with store._writer() as conn:
        bulk_insert(conn, TRANSITIONS, moves)
    # Then all of them are there
    assert store.transitions_frame()["actor"].fillna("").tolist() == ["", "ops", ""]


def test_sqlite_checks_the_distinct_values_once_then_inserts_row_by_row_without_them(tmp_path):
    # Given a SQLite store whose every statement is recorded, as SQLite runs it
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    statements: list[str] = []
    event.listen(
        store._engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(statements.append)
    )
    store._engine.dispose()
    # When a day's messages go in
    with store._writer() as conn:
        insert_messages(conn, outbox_rows(DAY, messages(DAY, LEARNERS), "d1", NOW))
    # Then the outbox's two checks ran once each over the distinct values, and the rows went
    # in with SQLite's per-row checks off, turned on again right after them
    on = statements.index("PRAGMA ignore_check_constraints=ON")
    off = statements.index("PRAGMA ignore_check_constraints=OFF")
    inserts = [at for at, sql in enumerate(statements) if sql.startswith("INSERT INTO outbox")]
    assert len(_starting(statements[:on], "WITH checked")) == 2
    assert on < min(inserts) and max(inserts) < off
    # And a row breaking a check after them is refused by SQLite itself
    bad = outbox_rows(DAY, messages(DAY, ["z"]), "d1", NOW)
    with pytest.raises(IntegrityError, match="CHECK constraint failed"), store._writer() as conn:
        conn.execute(OUTBOX.insert(), {**bad.iloc[0].to_dict(), "state": "lost"})
    store.close()


def test_driver_chunks_give_the_rows_driver_rows_gives_in_key_order(store, monkeypatch):
    # Given a frame of every kind of column a bulk insert takes: Arrow text with few and with
    # many distinct values and missing ones, dates, instants, numbers with NaN, flags, ints
    import serving.infra.driver_rows as rows_module

    count = 25
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series(
                [f"learner_{(7 * n) % count:02d}" for n in range(count)], dtype="str"
            ),
            "as_of": [DAY + timedelta(days=n % 2) for n in range(count)],
            "from_tag": pd.Series([None if n % 3 else "ST_001" for n in range(count)], dtype="str"),
            "to_tag": pd.Series(["ST_002"] * count, dtype="str"),
            "p_churn": [float("nan") if n % 4 == 0 else n / count for n in range(count)],
            "created_at": pd.Series([NOW] * count),
        }
    )
    monkeypatch.setattr(rows_module, "_CHUNK_ROWS", 10)  # several chunks
    monkeypatch.setattr(
        rows_module, "_SAMPLE_ROWS", 20
    )  # customer_id judged many values, the tags few
    # When its driver rows are made chunk by chunk
    with store._connect() as conn:
        chunks = list(rows_module.driver_chunks(conn, TRANSITIONS, frame, order_by="customer_id"))
        whole = rows_module.driver_rows(
            conn, TRANSITIONS, frame.sort_values("customer_id", kind="stable")
        )
    # Then they are the rows of the whole frame in key order, value for value, type for type
    rows = [row for chunk in chunks for row in chunk]
    assert [len(chunk) for chunk in chunks] == [10, 10, 5]
    assert rows == whole
    assert [[type(value) for value in row] for row in rows] == [
        [type(value) for value in row] for row in whole
    ]
