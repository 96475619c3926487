"""SQL of the state store: the engine, the statements and the bulk writes (``serving.infra.store``).

SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writers; PostgreSQL gets binary
COPY for bulk rows. Every function takes an open connection: transactions and the writer lock
are the store's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    Index,
    Result,
    Select,
    Table,
    create_engine,
    delete,
    event,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from features.machine import usable_cores
from serving.core.frames import RunRecord, StoredColumns, stored_frame
from serving.core.problems import Invalid, Unavailable
from serving.infra.driver_rows import checks_once, driver_chunks, sqlite_insert
from serving.infra.tables import BatchRun, Score, Status, Transition

SQLITE_BUSY_TIMEOUT_S = 120
"""How long a SQLite writer waits for another writer (a 1M-row batch commits in well under this)."""
SORT_THREADS_MAX = 8
"""The most helper threads SQLite allows a sort."""
WRITER_OPTION = "lstep_writer"
"""Execution option marking a writer connection (SQLite then begins IMMEDIATE)."""

# ---- engine ----------------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """The URL as it may be shown: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turn a database that cannot be reached, read or written into one ``Unavailable`` line.

    Connection refused, a wrong password, a read-only or vanished SQLite file: the message names
    the store (password masked) and the driver's first line, never a traceback. Errors that mean
    a bug (integrity, programming) pass through.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise Unavailable(f"state store {safe_url(url)}: {reason}") from None


def open_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writers.

    Raises:
        Invalid: the URL is not a database URL this installation can open.
        Unavailable: a SQLite file's directory cannot be created.
    """
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as error:
        raise Invalid(f"state store URL {safe_url(url)} cannot be opened: {error}") from None
    in_a_file = parsed.database and parsed.database != ":memory:" and "uri" not in parsed.query
    if in_a_file:  # a plain path (``file:`` URIs name files SQLite opens as they are)
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise Unavailable(f"state store {safe_url(url)}: {error}") from None
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself: pysqlite's own implicit BEGIN is
    # deferred and would let two writers both start and one fail with "database is locked".
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB of page cache: index inserts of a million-row batch stop thrashing the default 2 MiB.
    cursor.execute("PRAGMA cache_size=-65536")
    # Sorts (CREATE INDEX after a first load's rows: ``indexes_after``) may use a helper thread
    # per core (SQLite's default is none): the outbox's three indexes over its 3.1M rows at 1M
    # learners 14.1-14.8 -> 11.6-11.9 s alone; in the 1M benchmark's day after a first load
    # (the 3.1M-row rebuild) the write 32.5-38.9 -> 30.9-32.8 s, the first load's within noise.
    cursor.execute(f"PRAGMA threads={sort_threads()}")
    cursor.close()


@contextmanager
def wal_synced_commit(conn: Connection) -> Iterator[None]:
    """SQLite: the block's commit syncs the WAL itself and leaves copying it into the database
    file (the checkpoint) to ``checkpoint_wal``; the connection's settings are restored after.

    The store runs ``synchronous=NORMAL``: a commit writes the WAL unsynced and the automatic
    checkpoint (past 1000 pages) syncs it, copies every page into the file and syncs that, all
    inside the commit: a steady day's 90 MB of WAL at 200k learners (random outbox index pages)
    cost ~0.35 s of CPU and ~0.65 s of wall there. ``synchronous=FULL`` syncs the WAL at the
    commit, so the day is as durable when the commit returns as it was after that checkpoint;
    the copy then runs off the write's path. A no-op elsewhere (PostgreSQL syncs its own log).
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    # On the driver's connection: a statement through SQLAlchemy would begin a transaction.
    driver = conn.connection.driver_connection
    driver.execute("PRAGMA synchronous=FULL")
    driver.execute("PRAGMA wal_autocheckpoint=0")
    try:
        yield
    finally:
        driver.execute("PRAGMA wal_autocheckpoint=1000")  # SQLite's default
        driver.execute("PRAGMA synchronous=NORMAL")


def checkpoint_wal(engine: Engine) -> None:
    """Copy the committed WAL into a SQLite database file (``PRAGMA wal_checkpoint(PASSIVE)``:
    never waits for readers or writers; what it leaves, the next automatic checkpoint copies).

    Best effort: the WAL it copies is synced already (``wal_synced_commit``).
    """
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as conn:
            conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception:  # nothing is lost: a later checkpoint copies the (synced) WAL
        return


def sort_threads() -> int:
    """SQLite's helper threads for a large sort: one per core the process may use
    (``features.machine.usable_cores``), at most ``SORT_THREADS_MAX``."""
    return min(usable_cores(), SORT_THREADS_MAX)


def _begin_sqlite_transaction(conn: Connection) -> None:
    writer = conn.get_execution_options().get(WRITER_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


# ---- reading helpers -------------------------------------------------------------------------


def read_frame(conn: Connection, stmt: Select[Any], columns: StoredColumns) -> pd.DataFrame:
    """The select's rows typed by ``columns``: the store's own rows (``stored_frame``)."""
    result = conn.execute(stmt)
    return stored_frame(result_frame(result), columns)


def result_frame(result: Result[Any]) -> pd.DataFrame:
    # pandas reads plain tuples ten times faster than SQLAlchemy Row objects.
    rows = [tuple(row) for row in result]
    return pd.DataFrame.from_records(rows, columns=list(result.keys()))


def driver_frame(conn: Connection, stmt: Select[Any]) -> pd.DataFrame:
    """A select's rows as the driver returns them, without SQLAlchemy's row objects.

    For the batch's bulk reads (a million learners' outbox rows a day): fetching through the
    DBAPI cursor took half the time of ``result_frame`` on 480k outbox rows. The price is the
    result processors: values come as the driver gives them (SQLite: dates as ISO strings,
    booleans as integers), so callers read only plain columns or convert them.
    """
    columns, rows = fetched_rows(conn, stmt)
    return pd.DataFrame.from_records(rows, columns=columns)


def fetched_rows(conn: Connection, stmt: Select[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A select's column names and its rows as the driver's tuples (``driver_frame`` without
    the frame, for a caller that types the rows itself)."""
    result = conn.execute(stmt)
    columns = list(result.keys())
    try:
        return columns, result.cursor.fetchall()
    finally:
        result.close()


def transitions_select(columns: Sequence[str] | None = None) -> Select[Any]:
    """The audit log in append order (only ``columns`` when given, in that order)."""
    table = Transition.__table__.columns
    chosen = list(table) if columns is None else [table[name] for name in columns]
    return select(*chosen).order_by(Transition.id)


def first_mapping(conn: Connection, stmt: Select[Any]) -> dict[str, Any] | None:
    row = conn.execute(stmt).first()
    return None if row is None else dict(row._mapping)


def latest_completed(conn: Connection) -> date | None:
    return conn.execute(
        select(func.max(BatchRun.as_of)).where(BatchRun.status == "completed")
    ).scalar_one()


def check_run_id_free(conn: Connection, run_id: str, as_of: date) -> None:
    other_day = conn.execute(
        select(BatchRun.as_of).where(BatchRun.run_id == run_id, BatchRun.as_of != as_of)
    ).scalar_one_or_none()
    if other_day is not None:
        raise ValueError(f"run_id {run_id!r} already names the batch of {other_day}")


def existing_run(conn: Connection, as_of: date, replace: bool) -> RunRecord | None:
    """The completed run of ``as_of``, after checking that the day may be (re)run at all."""
    latest = latest_completed(conn)
    row = first_mapping(
        conn,
        select(*BatchRun.__table__.columns).where(
            BatchRun.as_of == as_of, BatchRun.status == "completed"
        ),
    )
    if row is None:
        if latest is not None and as_of < latest:
            raise ValueError(
                f"as_of {as_of} is before the latest completed batch ({latest}): "
                "batches must move forward in time"
            )
        return None
    if replace and as_of != latest:
        raise ValueError(
            f"replace is allowed only for the latest completed as_of ({latest}), not {as_of}"
        )
    return RunRecord(**row)


# ---- writing helpers -------------------------------------------------------------------------


def bulk_insert(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    """Insert a frame of ``table`` columns: COPY on PostgreSQL, driver executemany elsewhere."""
    if frame.empty:
        return
    # Key order makes the primary-key and customer_id index inserts sequential (building the
    # indexes after the rows instead, ``indexes_after``, saved nothing on a first load).
    if conn.dialect.name == "postgresql":
        chunks = driver_chunks(conn, table, frame, order_by="customer_id")
        rows = (row for chunk in chunks for row in chunk)
        copy_rows(conn, table.name, list(frame.columns), rows)
        return
    insert_sql, bound = sqlite_insert(conn, table, frame)
    chunks = driver_chunks(conn, table, frame, order_by="customer_id", columns=bound)
    with checks_once(conn, table, frame):
        for chunk in chunks:
            conn.exec_driver_sql(insert_sql, chunk)


def holds_fewer_rows(conn: Connection, table: Table, count: int) -> bool:
    """Whether ``table`` holds fewer than ``count`` rows, reading at most ``count`` of them."""
    some = select(literal(1)).select_from(table).limit(count).subquery()
    return conn.execute(select(func.count()).select_from(some)).scalar_one() < count


@contextmanager
def indexes_after(conn: Connection, table: Table, incoming: int) -> Iterator[bool]:
    """The block's inserts of ``incoming`` rows into ``table``, with its secondary indexes
    dropped before them and built again after, when the table holds fewer rows than come;
    the block is told whether they were (the order its rows best go in depends on it).

    A first load (1.5M outbox messages at 1M learners, in ``message_id`` order) otherwise
    inserts every row into every index at a random place; one sort per index after the rows
    costs a fraction of that (SQLite and PostgreSQL alike). Only the non-unique indexes: the primary
    key and unique indexes keep enforcing what they enforce (``ON CONFLICT`` needs them). DDL is
    transactional on both databases: the day stays all-or-nothing, and a block that raises
    leaves the rollback to restore the indexes. On PostgreSQL ``DROP INDEX`` locks the table
    until the commit (readers wait for the write), which is why a table with more rows than
    come keeps its indexes.
    """
    indexes = sorted((index for index in table.indexes if not index.unique), key=_index_name)
    if not indexes or not holds_fewer_rows(conn, table, incoming):
        yield False
        return
    for index in indexes:
        index.drop(conn)
    yield True
    for index in indexes:
        index.create(conn)


def _index_name(index: Index) -> str:
    return str(index.name)


def copy_rows(
    conn: Connection, table_name: str, columns: list[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """COPY rows in PostgreSQL's binary format (about four times faster than text here)."""
    from psycopg import sql  # PostgreSQL only

    cursor = conn.connection.driver_connection.cursor()
    # Binary COPY needs each column's exact type: ask the server rather than guess.
    type_oids = dict(
        cursor.execute(
            "SELECT attname, atttypid FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table_name],
        ).fetchall()
    )
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table_name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cursor, cursor.copy(copy_sql) as copy:
        copy.set_types([type_oids[column] for column in columns])
        for row in rows:
            copy.write_row(row)


@contextmanager
def temporary_table(
    conn: Connection, name: str, kinds: dict[str, str], rows: list[tuple[Any, ...]]
) -> Iterator[None]:
    """A temporary table ``name`` (columns and SQL types ``kinds``) holding ``rows``, for the
    statements of the block to join; dropped after it.

    For sets of keys too large for an ``IN`` list (SQLite takes at most 32,766 parameters a
    statement). Filled by COPY on PostgreSQL, executemany on SQLite; without a key of its own
    (the callers give distinct rows, and a primary key cost SQLite more to build than it saved
    the joins). Dropped after an error too on SQLite; PostgreSQL's rollback drops it with the
    failed transaction.
    """
    postgres = conn.dialect.name == "postgresql"
    definition = ", ".join(f"{column} {kind}" for column, kind in kinds.items())
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({definition})")
    try:
        if postgres:
            copy_rows(conn, name, list(kinds), rows)
        else:
            marks = ", ".join("?" for _ in kinds)
            conn.exec_driver_sql(f"INSERT INTO {name} VALUES ({marks})", rows)
        yield
    except BaseException:
        if not postgres:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        raise
    conn.exec_driver_sql(f"DROP TABLE {name}")


def update_status_from_run(conn: Connection, run_id: str) -> None:
    """Set each learner the run moved to the tag of their transition in it (one statement)."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    moves = select(
        Transition.customer_id,
        Transition.to_tag,
        Transition.as_of,
        Transition.created_at,
        Transition.run_id,
    ).where(Transition.run_id == run_id)  # a WHERE also keeps SQLite's upsert parser happy
    statement = dialect_insert(Status).from_select(
        ["customer_id", "tag", "since", "updated_at", "run_id"], moves
    )
    statement = statement.on_conflict_do_update(
        index_elements=[Status.customer_id],
        set_={name: statement.excluded[name] for name in ("tag", "since", "updated_at", "run_id")},
        # Status is the latest transition in data time: a move of an earlier day than an
        # override dated ahead does not replace it.
        where=Status.since <= statement.excluded.since,
    )
    conn.execute(statement)


def upsert_run(conn: Connection, values: dict[str, Any]) -> None:
    """Write the one ``batch_runs`` row of ``values['as_of']``, replacing whatever was there."""
    conn.execute(delete(BatchRun).where(BatchRun.as_of == values["as_of"]))
    conn.execute(BatchRun.__table__.insert().values(**values))


def undo_run(conn: Connection, run: RunRecord, now: datetime) -> None:
    """Delete a completed day's scores and automatic transitions and restore the prior tags."""
    moved = select(Transition.customer_id).where(Transition.run_id == run.run_id)
    kept = or_(Transition.run_id.is_(None), Transition.run_id != run.run_id)
    # Learners the run created have no earlier transition: they disappear with it.
    conn.execute(
        delete(Status).where(
            Status.customer_id.in_(moved),
            Status.customer_id.not_in(select(Transition.customer_id).where(kept)),
        )
    )

    def previous(column: Any) -> Any:
        # Correlated with the status row being updated: its latest transition that stays.
        return (
            select(column)
            .where(Transition.customer_id == Status.customer_id, kept)
            .order_by(Transition.as_of.desc(), Transition.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    conn.execute(
        update(Status)
        .where(Status.customer_id.in_(moved))
        .values(
            tag=previous(Transition.to_tag),
            since=previous(Transition.as_of),
            run_id=previous(Transition.run_id),
            updated_at=now,
        )
    )
    conn.execute(delete(Transition).where(Transition.run_id == run.run_id))
    conn.execute(delete(Score).where(Score.as_of == run.as_of))
