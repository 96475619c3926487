"""``serving.infra.arrow_reads``: whole-table reads of a SQLite file in the reader process
(ADBC), the same table as the driver's rows give; the reader's failures (a bad statement, a
file that is no database, a read past its deadline, a reader that died) each say what happened,
and the process's own ``sqlite3`` connections keep working beside it."""

from __future__ import annotations

import sqlite3
import warnings
from datetime import date
from pathlib import Path
from unittest.mock import patch

import pyarrow as pa
import pytest
from sqlalchemy import Connection, make_url, text

from serving.core.problems import Unavailable
from serving.infra import arrow_reads
from serving.infra.arrow_reads import (
    TemporaryRows,
    driver_table,
    read_table,
    sqlite_file,
    sqlite_path,
    typed_table,
)
from serving.infra.sql import open_engine

SCHEMA = pa.schema([("name", pa.string()), ("day", pa.date32()), ("count", pa.int64())])
LATE = 1_500
"""Rows before the first non-null ``name``: more than ADBC's default 1,024-row batch."""


@pytest.fixture
def engine(tmp_path):
    """A SQLite file with ``demo``: ``LATE`` rows without a name, then one with."""
    opened = open_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    with opened.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE demo (id INTEGER PRIMARY KEY, name TEXT, day DATE)")
        rows = [(i, None, None) for i in range(LATE)] + [(LATE, "late", "2026-03-02")]
        conn.exec_driver_sql("INSERT INTO demo VALUES (?, ?, ?)", rows)
    yield opened
    opened.dispose()


def _select_all(conn: Connection) -> pa.Table:
    return read_table(conn, text("SELECT name, day, id FROM demo ORDER BY id"), SCHEMA)


def test_a_column_null_in_its_first_batch_reads_as_the_driver_reads_it(engine):
    # Given a name and a day null in the first 1,500 rows, then set
    with engine.connect() as conn:
        # When the table is read by the reader process and by the driver
        assert sqlite_file(conn) is not None
        by_reader = _select_all(conn)
        by_driver = driver_table(conn, text("SELECT name, day, id FROM demo ORDER BY id"), SCHEMA)
    # Then both are the schema's table, the late values typed as the schema says
    assert by_reader.equals(by_driver)
    assert by_reader.schema == SCHEMA
    assert by_reader.column("name")[LATE].as_py() == "late"
    assert by_reader.column("day")[LATE].as_py() == date(2026, 3, 2)


def test_the_processs_own_sqlite_connections_keep_working_and_reads_see_each_commit(engine):
    # Given a read by the reader process (ADBC linked in this process would have closed the
    # file under this process's sqlite3 connections: "disk I/O error", stale reads)
    with engine.connect() as conn:
        assert _select_all(conn).num_rows == LATE + 1
    # When this process commits through its own driver after it
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO demo VALUES (?, ?, ?)", [(LATE + 1, "new", None)])
    # Then the next read sees the commit, and a plain sqlite3 connection reads the file
    with engine.connect() as conn:
        assert _select_all(conn).column("name")[-1].as_py() == "new"
    plain = sqlite3.connect(engine.url.database)
    try:
        assert plain.execute("SELECT count(*) FROM demo").fetchone() == (LATE + 2,)
    finally:
        plain.close()


def test_temporary_tables_are_filled_from_arrow_and_joined_by_the_read(engine):
    # Given two ids with days, as a temporary table
    rows = pa.table({"id": pa.array([3, LATE], pa.int64()), "since": [date(2026, 1, 1)] * 2})
    picked = TemporaryRows("picked", {"id": "INTEGER", "since": "DATE"}, rows)
    statement = text(
        "SELECT d.name, p.since, d.id FROM demo d JOIN picked p ON p.id = d.id ORDER BY d.id"
    )
    with engine.connect() as conn:
        # When a read joins it
        table = read_table(conn, statement, SCHEMA, (picked,))
    # Then only their rows come, with the days given
    assert table.to_pylist() == [
        {"name": None, "day": date(2026, 1, 1), "count": 3},
        {"name": "late", "day": date(2026, 1, 1), "count": LATE},
    ]


def test_a_bad_statement_is_a_runtime_error_naming_it_and_the_reader_goes_on(engine):
    with engine.connect() as conn:
        # When a read names a table that does not exist
        with pytest.raises(RuntimeError, match=r"demo\.db: read failed: .*no such table: nowhere"):
            read_table(conn, text("SELECT 1, 2, 3 FROM nowhere"), SCHEMA)
        # Then the next read is answered by the same reader
        reader = arrow_reads._reader
        assert _select_all(conn).num_rows == LATE + 1
        assert arrow_reads._reader is reader


def test_a_file_that_cannot_be_opened_is_one_unavailable_line(engine):
    with engine.connect() as conn:
        _select_all(conn)  # the reader is up
        # Given the store's file gone and a directory in its place
        path = Path(engine.url.database)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.mkdir()
        # When it is read whole
        with pytest.raises(Unavailable) as raised:
            _select_all(conn)
    # Then one line names the store and what is wrong
    message = str(raised.value)
    assert message.startswith(f"state store sqlite:///{path}: ") and "\n" not in message
    assert "failed to open" in message


def test_a_file_that_is_no_database_is_one_line_naming_the_store(tmp_path, engine):
    with engine.connect() as conn:
        # Given a store's file that SQLite cannot read (text where its header should be)
        junk = tmp_path / "junk.db"
        junk.write_text("not a database " * 100)
        # When it is read whole
        with (
            patch.object(arrow_reads, "sqlite_file", return_value=str(junk)),
            pytest.raises(RuntimeError) as raised,
        ):
            _select_all(conn)
    # Then one line names the store and SQLite's words
    message = str(raised.value)
    assert message.startswith("state store sqlite:///") and "file is not a database" in message
    assert "\n" not in message


def test_a_read_past_its_deadline_stops_the_reader_and_says_so(engine, monkeypatch):
    # Given a deadline far shorter than a slow statement
    monkeypatch.setattr(arrow_reads, "READ_DEADLINE_S", 0.2)
    slow = text(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000000) "
        "SELECT 'x', NULL, count(*) FROM n"
    )
    with engine.connect() as conn:
        _select_all(conn)  # started: the deadline is the read's, not the start's
        # When it is read
        with pytest.raises(Unavailable, match=r"a read took more than 0.2 s"):
            read_table(conn, slow, SCHEMA)
    # Then the reader was stopped, and the next read starts another
    assert arrow_reads._reader is None
    monkeypatch.setattr(arrow_reads, "READ_DEADLINE_S", 600)
    with engine.connect() as conn:
        assert _select_all(conn).num_rows == LATE + 1


def test_a_reader_that_died_is_warned_of_and_the_driver_reads_instead(engine):
    with engine.connect() as conn:
        _select_all(conn)
        # Given the reader killed between two reads
        arrow_reads._reader._process.kill()
        arrow_reads._reader._process.wait()
        # When the next read is asked
        with pytest.warns(UserWarning, match="reader process ended"):
            table = _select_all(conn)
        # Then the driver gave the same rows, and the read after starts a new reader
        assert table.num_rows == LATE + 1 and arrow_reads._reader is None
        assert _select_all(conn).num_rows == LATE + 1
        assert arrow_reads._reader is not None


def test_the_reader_runs_this_process_code_not_a_package_in_the_working_directory(
    engine, tmp_path, monkeypatch
):
    # Given a working directory holding a ``serving`` package of its own (another checkout),
    # whose reader would answer nothing, and a reader started from there
    decoy = tmp_path / "elsewhere" / "serving" / "infra"
    decoy.mkdir(parents=True)
    for package in (decoy.parent, decoy):
        (package / "__init__.py").write_text("")
    (decoy / "adbc_reader.py").write_text("raise SystemExit('the decoy reader')\n")
    monkeypatch.chdir(decoy.parent.parent)
    arrow_reads._forget_reader()
    # When a read is asked
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("error")  # a dead reader would only warn and read by the driver
        table = _select_all(conn)
    # Then this process's reader answered it
    assert table.num_rows == LATE + 1
    assert arrow_reads._reader is not None and arrow_reads._reader._process.poll() is None


def test_a_table_of_other_columns_than_the_schemas_is_refused():
    with pytest.raises(ValueError, match=r"gave 1 columns \(\['x'\]\), expected 3"):
        typed_table(pa.table({"x": [1]}), SCHEMA)


def test_an_in_memory_database_reads_through_its_driver():
    # Given an in-memory SQLite (no file for a reader to open)
    engine = open_engine("sqlite://")
    try:
        with engine.connect() as conn:
            # When a table is read
            table = read_table(conn, text("SELECT 'a', '2026-01-02', 7"), SCHEMA)
            # Then its driver read it: no file, the same schema
            assert sqlite_file(conn) is None
        assert table.to_pylist() == [{"name": "a", "day": date(2026, 1, 2), "count": 7}]
    finally:
        engine.dispose()


def test_a_relative_sqlite_path_is_made_absolute_and_other_urls_have_none(tmp_path, monkeypatch):
    # Given this process in tmp (the reader keeps the directory it started in)
    monkeypatch.chdir(tmp_path)
    # When store URLs are resolved to the file a reader opens
    # Then a relative file is tmp's, and a memory database or PostgreSQL has no file
    assert sqlite_path(make_url("sqlite:///state.db")) == str(tmp_path / "state.db")
    assert sqlite_path(make_url("sqlite://")) is None
    assert sqlite_path(make_url("sqlite:///:memory:")) is None
    assert sqlite_path(make_url("postgresql+psycopg://lstep@localhost/test")) is None
