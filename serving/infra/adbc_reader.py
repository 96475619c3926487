"""What the store's reader process runs (``arrow_reads``): a SQLite read by ADBC, as Arrow.

Kept apart from the rest of ``serving.infra``: the process imports this module only (pyarrow
and ADBC's SQLite driver), and must never open the database with Python's ``sqlite3``. ADBC
links its own SQLite; two SQLite libraries in one process lose each other's POSIX locks on a
file either of them closes, and the WAL they share can then be checkpointed under a reader.
Seen here: a ``sqlite3`` connection of the process that had just read by ADBC failed with
"disk I/O error", and a read saw the state before the latest commit.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO

import adbc_driver_manager.dbapi as adbc_dbapi
import adbc_driver_sqlite.dbapi as adbc_sqlite
import pyarrow as pa

BATCH_ROWS_OPTION = "adbc.sqlite.query.batch_rows"
ONE_BATCH = 1 << 30
"""Rows per result batch: all of them. The driver types each column from the first batch's
values, so a column null in its first 1,024 rows (an override: most learners have none) would
be typed INT64 and fail on the first text after it; one batch is typed from every row."""


LENGTH = struct.Struct("<Q")
"""A message's length on the pipe, before it."""


class ReadFailed(Exception):
    """A read that failed in the reader process, with the driver's first line (picklable,
    unlike ADBC's own errors). ``operational``: the file could not be opened or read."""

    def __init__(self, message: str, operational: bool) -> None:
        super().__init__(message, operational)
        self.message = message
        self.operational = operational

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TemporaryRows:
    """A temporary table the read's statement joins: its name, columns with SQL types, rows."""

    name: str
    kinds: dict[str, str]
    rows: pa.Table


def read(path: str, sql: str, busy_timeout_ms: int, tables: tuple[TemporaryRows, ...]) -> pa.Table:
    """``sql``'s rows from the SQLite file ``path`` (after filling ``tables``), in one read
    transaction of a connection of its own.

    Raises:
        ReadFailed: the driver's error, first line.
    """
    try:
        with adbc_sqlite.connect(path) as conn, conn.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            for table in tables:
                columns = ", ".join(f"{name} {kind}" for name, kind in table.kinds.items())
                cursor.execute(f"CREATE TEMPORARY TABLE {table.name} ({columns})")
                cursor.adbc_ingest(table.name, table.rows, mode="append", temporary=True)
            cursor.adbc_statement.set_options(**{BATCH_ROWS_OPTION: str(ONE_BATCH)})
            cursor.execute(sql)
            result = cursor.fetch_arrow_table()
            conn.rollback()  # a read: nothing to keep, temporary tables included
            return result
    except adbc_dbapi.Error as error:
        operational = isinstance(error, adbc_dbapi.OperationalError | adbc_dbapi.InterfaceError)
        raise ReadFailed(str(error).strip().splitlines()[0], operational) from None


def serve(requests: BinaryIO, responses: BinaryIO) -> None:
    """Answer ``read`` requests until ``requests`` ends: each a pickled ``(path, sql,
    busy_timeout_ms, tables)`` behind its length, each answer a pickled ``(table, None)`` or
    ``(None, ReadFailed)`` (``_send``; ``arrow_reads._Reader`` is the other end)."""
    while header := requests.read(LENGTH.size):
        (size,) = LENGTH.unpack(header)
        request = pickle.loads(requests.read(size))
        try:
            answer: tuple[pa.Table | None, ReadFailed | None] = (read(*request), None)
        except ReadFailed as error:
            answer = (None, error)
        except Exception as error:  # a bug: said, not a dead reader
            answer = (None, ReadFailed(f"{type(error).__name__}: {error}", operational=False))
        _send(responses, answer)


def _send(responses: BinaryIO, answer: tuple[pa.Table | None, ReadFailed | None]) -> None:
    """One answer: how many Arrow buffers, the sizes of the pickle and of each buffer, the
    pickle, then the buffers as they are (pickle protocol 5, out of band).

    In band, the answer was copied into the pickle, then into the message, then joined and
    copied again out of the pickle by the parent, each copy into fresh pages (costly on these
    VMs). Now the buffers go from Arrow's memory to the pipe, and from the pipe into the
    parent's buffers, which the table then uses. At 1M learners the gain is small, the parent's
    part of a read being small already: the state 0.56-0.83 -> 0.55-0.68 s wall, the pending
    pairs 0.59-0.66 -> 0.53-0.58 s (alternated, three each).
    """
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(answer, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    sizes = [len(data), *(raw.nbytes for raw in raws)]
    responses.write(LENGTH.pack(len(raws)) + b"".join(LENGTH.pack(size) for size in sizes))
    responses.write(data)
    for raw in raws:
        responses.write(raw)
    responses.flush()


if __name__ == "__main__":
    # By its package name: what it pickles (``ReadFailed``) must unpickle in the parent.
    from serving.infra import adbc_reader

    # The answers get stdout's pipe to themselves: anything printed goes to stderr instead.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    adbc_reader.serve(sys.stdin.buffer, answers)
