"""Whole-table reads of the state store as Arrow: what a batch day reads before it decides.

A day at a million learners reads the whole state (a row per learner) and the planner's pending
pairs and window counts (about a million rows each). The stdlib ``sqlite3`` driver makes a
Python tuple and Python strings of every row, holding the GIL all the while: 1.3 s for the
state, 1.7-2.1 s for the pending pairs. ADBC's SQLite driver (Apache Arrow's
``adbc-driver-sqlite``) builds Arrow columns in C: 0.6 s each.

ADBC links a SQLite of its own, and two SQLite libraries must not open one database in one
process (``adbc_reader``'s docstring says what broke). So on a SQLite file these reads run in a
reader process (``python -m serving.infra.adbc_reader``, one per process, started with a SQLite
store or else by the first read; ADBC only; no file of this process open in it), on pipes: the
table comes back pickled as Arrow buffers, and the batch's process is free meanwhile. Not
``multiprocessing``: its spawned children import the parent's main script again, which a user's
script without a ``__main__`` guard does not survive. Elsewhere (PostgreSQL, an in-memory
SQLite) they go through the driver's rows, made Arrow by one struct array. Either way the caller
gets ``schema``'s columns and types.

A read in the reader process is a connection, and so a snapshot, of its own: only for a
statement (with the temporary tables it joins) that needs no other read's snapshot, outside any
transaction of the store's. Statements are rendered with their values inline (dates, states:
values the store makes, never a caller's text), so only selects whose parameters are scalars go
this way.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import select
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import pyarrow as pa
from sqlalchemy import URL, Connection
from sqlalchemy.sql.expression import Executable

from serving.core.problems import Unavailable
from serving.infra import adbc_reader
from serving.infra.adbc_reader import ReadFailed, TemporaryRows
from serving.infra.sql import SQLITE_BUSY_TIMEOUT_S, fetched_rows, safe_url, temporary_table

READER_SUPPORTED = os.name == "posix"
"""Whether this system has the reader (its deadline waits on the pipe with ``select``, which
takes no pipe on Windows: there the driver reads)."""
READ_DEADLINE_S = 600
"""How long a read in the reader process may take (a million learners' state: ~1 s)."""

_LENGTH = adbc_reader.LENGTH


class ReaderDied(Exception):
    """The reader process ended (killed, out of memory) before it answered."""


class _Reader:
    """The reader process of this process, and the pipes to it; one request at a time."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._process = subprocess.Popen(
            # -P: the working directory is not put first on the path, so the reader imports the
            # code this process runs (its path, above), never a ``serving`` package that happens
            # to sit in the directory the batch was started from (another version's checkout)
            [sys.executable, "-P", "-m", "serving.infra.adbc_reader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        self._lock = threading.Lock()

    def read(self, request: tuple[Any, ...], timeout: float) -> pa.Table:
        """The reader's answer to ``request`` (``adbc_reader.read``'s arguments).

        Raises:
            ReadFailed: the read failed in the reader.
            ReaderDied: the reader ended before it answered.
            TimeoutError: no answer within ``timeout`` seconds (the reader is stopped).
        """
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        deadline = time.monotonic() + timeout
        with self._lock:
            try:
                self._process.stdin.write(_LENGTH.pack(len(data)) + data)
                self._process.stdin.flush()
            except (BrokenPipeError, OSError):
                raise ReaderDied from None
            (count,) = _LENGTH.unpack(self._receive(_LENGTH.size, deadline))
            header = self._receive(_LENGTH.size * (count + 1), deadline)
            sizes = [size for (size,) in _LENGTH.iter_unpack(header)]
            data = self._receive(sizes[0], deadline)
            buffers = [self._receive(size, deadline) for size in sizes[1:]]
            table, error = pickle.loads(data, buffers=buffers)
        if error is not None:
            raise error
        return table

    def _receive(self, size: int, deadline: float) -> bytearray:
        """``size`` bytes from the reader, by ``deadline``, read straight into one buffer (an
        answer's Arrow buffers are used where they land: ``adbc_reader._send``)."""
        pipe, received = self._process.stdout.fileno(), bytearray(size)
        view, filled = memoryview(received), 0
        while filled < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                self.stop()
                raise TimeoutError
            count = os.readv(pipe, [view[filled : filled + (1 << 24)]])
            if not count:
                raise ReaderDied
            filled += count
        return received

    def stop(self) -> None:
        """End the reader (it also ends by itself when this process's end of its pipe closes)."""
        self._process.kill()
        self._process.wait()


_reader: _Reader | None = None
_reader_lock = threading.Lock()


def sqlite_file(conn: Connection) -> str | None:
    """The SQLite database file ``conn`` reads, None for another database or one in memory."""
    return sqlite_path(conn.engine.url)


def sqlite_path(url: URL) -> str | None:
    """The SQLite database file of ``url``, None for another database or one in memory."""
    if url.get_backend_name() != "sqlite" or "uri" in url.query:
        return None
    if not url.database or url.database == ":memory:":
        return None
    return os.path.abspath(url.database)  # the reader's working directory may not be ours


def start_reader() -> None:
    """Start this process's reader now, if it is not running: its interpreter and imports
    (~0.4 s) then load while the caller gets on, instead of in its first read."""
    if READER_SUPPORTED:
        _reader_process()


def read_table(
    conn: Connection,
    stmt: Executable,
    schema: pa.Schema,
    tables: tuple[TemporaryRows, ...] = (),
) -> pa.Table:
    """``stmt``'s rows as a table of ``schema`` (its columns in order), after filling the
    temporary ``tables`` it joins: in the reader process on a SQLite file, in a snapshot of its
    own; otherwise by ``conn``'s driver (``driver_table``), in its transaction.

    Raises:
        Unavailable: the SQLite file cannot be opened or read (one line naming the store).
    """
    path = sqlite_file(conn) if READER_SUPPORTED else None
    if path is None:
        return _driver_read(conn, stmt, schema, tables)
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    request = (path, sql, SQLITE_BUSY_TIMEOUT_S * 1000, _text_days(tables))
    try:
        return typed_table(_reader_process().read(request, READ_DEADLINE_S), schema)
    except ReadFailed as error:
        if error.operational:
            raise Unavailable(f"state store {safe_url(str(conn.engine.url))}: {error}") from None
        raise RuntimeError(
            f"state store {safe_url(str(conn.engine.url))}: read failed: {error}"
        ) from None
    except TimeoutError:
        _forget_reader()
        raise Unavailable(
            f"state store {safe_url(str(conn.engine.url))}: a read took more than "
            f"{READ_DEADLINE_S} s"
        ) from None
    except ReaderDied:
        # Killed, out of memory: this read goes through the driver, the next starts a reader.
        _forget_reader()
        warnings.warn("the store's reader process ended; read through the driver", stacklevel=2)
        return _driver_read(conn, stmt, schema, tables)


def driver_table(conn: Connection, stmt: Executable, schema: pa.Schema) -> pa.Table:
    """``stmt``'s rows through ``conn``'s driver (in its transaction), as ``schema``'s table.

    The rows go to Arrow as one struct array whose fields are the columns (a tenth of what
    pandas took to transpose and type them). SQLite's driver gives days and instants as ISO
    text (naive instants: UTC, as the store writes them).
    """
    text_times = conn.dialect.name == "sqlite"
    read_as = [
        pa.field(field.name, pa.string() if text_times and _is_time(field.type) else field.type)
        for field in schema
    ]
    _, rows = fetched_rows(conn, stmt)
    columns = pa.array(rows, type=pa.struct(read_as)).flatten()
    return typed_table(pa.Table.from_arrays(columns, schema=pa.schema(read_as)), schema)


def _is_time(kind: pa.DataType) -> bool:
    return kind == pa.date32() or (pa.types.is_timestamp(kind) and kind.tz is None)


def typed_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns, in order, cast to ``schema``'s types and named by it.

    A column with no value (no row, or SQLite NULLs only, which ADBC types INT64) becomes
    nulls of the schema's type; days given as ISO text are parsed.

    Raises:
        ValueError: ``table`` has another number of columns than ``schema``.
    """
    if table.num_columns != len(schema):
        raise ValueError(
            f"a read gave {table.num_columns} columns ({table.column_names}), "
            f"expected {len(schema)} ({schema.names})"
        )
    columns = [
        pa.nulls(len(column), field.type)
        if column.null_count == len(column)
        else column.cast(field.type)
        for column, field in zip(table.columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _driver_read(
    conn: Connection, stmt: Executable, schema: pa.Schema, tables: tuple[TemporaryRows, ...]
) -> pa.Table:
    """``read_table`` through the driver: the temporary tables made in ``conn`` (COPY on
    PostgreSQL), dropped after the read."""
    if not tables:
        return driver_table(conn, stmt, schema)
    if conn.dialect.name == "sqlite":
        tables = _text_days(tables)
    first, rest = tables[0], tables[1:]
    rows = list(zip(*(column.to_pylist() for column in first.rows.columns), strict=True))
    with temporary_table(conn, first.name, first.kinds, rows):
        return _driver_read(conn, stmt, schema, rest)


def _text_days(tables: tuple[TemporaryRows, ...]) -> tuple[TemporaryRows, ...]:
    """The tables with their days as the ISO text SQLAlchemy stores on SQLite."""
    return tuple(
        dataclasses.replace(
            table,
            rows=pa.Table.from_arrays(
                [
                    column.cast(pa.string()) if pa.types.is_date(column.type) else column
                    for column in table.rows.columns
                ],
                names=table.rows.column_names,
            ),
        )
        for table in tables
    )


def _reader_process() -> _Reader:
    """This process's reader, started on first use (and again in a forked child)."""
    global _reader
    with _reader_lock:
        if _reader is None or _reader.pid != os.getpid():
            _reader = _Reader()
        return _reader


def _forget_reader() -> None:
    global _reader
    with _reader_lock:
        if _reader is not None and _reader.pid == os.getpid():
            _reader.stop()
        _reader = None


__all__ = [
    "READ_DEADLINE_S",
    "ReaderDied",
    "TemporaryRows",
    "driver_table",
    "read_table",
    "sqlite_file",
    "sqlite_path",
    "start_reader",
    "typed_table",
]
