"""Bulk rows as the database driver takes them (``serving.infra.sql``'s bulk writes).

``driver_rows`` and ``driver_chunks`` turn a frame into the driver's tuples (column types
applied, None for missing values), a chunk at a time in key order; ``checks_once`` lets SQLite
check a bulk insert's CHECK constraints once per distinct value instead of once per row;
``sqlite_insert`` writes the columns holding one value in every row into the statement
instead of binding them row after row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import is_bool_dtype, is_float_dtype
from sqlalchemy import CheckConstraint, Connection, Table
from sqlalchemy.exc import IntegrityError

_CHUNK_ROWS = 50_000
_SAMPLE_ROWS = 10_000
SQLITE_PARAMETERS = 32_766
"""The most parameters SQLite takes in one statement (``SQLITE_MAX_VARIABLE_NUMBER``)."""


def driver_rows(conn: Connection, table: Table, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows as the DBAPI driver takes them: None for missing values, column types applied.

    Each column's SQLAlchemy bind processor (dates to text on SQLite, UTC for instants) runs
    once per distinct value rather than once per row: batch columns such as ``as_of`` or
    ``created_at`` hold one value for a million rows.
    """
    columns = []
    for name in frame.columns:
        series = frame[name]
        processor = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        # Python floats and bools are what every driver takes already.
        if processor is None or is_float_dtype(series.dtype) or is_bool_dtype(series.dtype):
            columns.append(series.to_numpy(dtype=object, na_value=None).tolist())
            continue
        codes, distinct = pd.factorize(series)  # missing values get code -1
        lookup = [processor(value) for value in distinct.to_numpy(dtype=object)] + [None]
        columns.append(np.asarray(lookup, dtype=object)[codes].tolist())
    return list(zip(*columns, strict=True))


def driver_chunks(
    conn: Connection,
    table: Table,
    frame: pd.DataFrame,
    order_by: str,
    columns: Sequence[str] | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """``driver_rows`` of the frame's ``columns`` (all: None) in ``order_by`` order,
    ``_CHUNK_ROWS`` rows at a time.

    A million rows as Python tuples at once cost gigabytes (the day's peak at scale); a chunk
    at a time holds one chunk's. The order is taken chunk by chunk too, not by a sorted copy:
    each column is made ready once (``_column_picker``) and picks a chunk's rows from that.
    Taking every chunk's rows of the whole frame (``iloc``) then converting them cost 4.8 CPU s
    on a 1M first load's 1.55M messages, half of it Arrow's take of every text column.
    """
    order = frame[order_by].argsort(kind="stable").to_numpy()
    names = frame.columns if columns is None else columns
    pickers = [_column_picker(conn, table, name, frame[name]) for name in names]
    for start in range(0, len(frame), _CHUNK_ROWS):
        rows = order[start : start + _CHUNK_ROWS]
        yield list(zip(*(pick(rows) for pick in pickers), strict=True))


def _column_picker(
    conn: Connection, table: Table, name: str, series: pd.Series
) -> Callable[[np.ndarray], list[Any]]:
    """A function giving the values of ``series`` at some positions as ``driver_rows`` does.

    A column with a bind processor (dates, instants: few distinct values a day) is coded once
    and each distinct value processed once; Arrow text is taken from its one array (Python
    strings made for the chunk only, None for missing); numbers and flags from their numpy
    array; anything else (objects) as ``driver_rows`` converts it.
    """
    processor = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    plain = is_float_dtype(series.dtype) or is_bool_dtype(series.dtype)
    if processor is not None and not plain:
        codes, distinct = pd.factorize(series)  # missing values get code -1
        lookup = [processor(value) for value in distinct.to_numpy(dtype=object)] + [None]
        looked_up = np.asarray(lookup, dtype=object)
        return lambda rows: looked_up[codes[rows]].tolist()
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        return _text_picker(_one_text_array(pa.array(series.array)))
    if series.dtype == np.float64:
        numbers = series.to_numpy()
        return lambda rows: _floats_or_none(numbers[rows])
    if series.dtype in (np.int64, np.bool_):
        values = series.to_numpy()
        return lambda rows: values[rows].tolist()
    return lambda rows: series.iloc[rows].to_numpy(dtype=object, na_value=None).tolist()


def _text_picker(text: pa.Array) -> Callable[[np.ndarray], list[str | None]]:
    """Arrow text's values at some positions: a column of few distinct values (a campaign, a
    state, a run id: judged on its first ``_SAMPLE_ROWS``) coded once, each distinct value one
    Python string shared by its rows (0.18 -> 0.03 CPU s a column of 1.55M messages); ids and
    contexts taken from Arrow chunk by chunk, their strings made for the chunk only."""
    sample = text.slice(0, _SAMPLE_ROWS)
    if len(sample) and pc.count_distinct(sample, mode="all").as_py() * 10 > len(sample):
        return lambda rows: text.take(rows).to_pylist()
    coded = text.dictionary_encode()
    distinct = np.asarray([*coded.dictionary.to_pylist(), None], dtype=object)
    codes = coded.indices.fill_null(len(coded.dictionary)).to_numpy()
    return lambda rows: distinct[codes[rows]].tolist()


def _one_text_array(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column of concatenated frames comes chunked: its chunks joined, a single one taken
    as it is (joining it would copy a day's contexts). ``rules.codes.one_array``'s rule;
    not imported from there: ``rules`` adds half a second to importing the store."""
    if not isinstance(text, pa.ChunkedArray):
        return text
    return text.chunk(0) if text.num_chunks == 1 else text.combine_chunks()


def _floats_or_none(numbers: np.ndarray) -> list[float | None]:
    """Python floats, None for NaN (the driver's missing value)."""
    values = numbers.astype(object)
    values[np.isnan(numbers)] = None
    return values.tolist()


@contextmanager
def checks_once(conn: Connection, table: Table, frame: pd.DataFrame) -> Iterator[None]:
    """SQLite: the block's row-by-row inserts of ``frame`` into ``table`` with the table's
    CHECK constraints evaluated once per distinct combination of the values they read
    (``_refuse_failed_check``) instead of once per row (``ignore_check_constraints`` for the
    block, restored after it); a frame that would fail one raises ``IntegrityError`` naming
    it before anything is inserted, as SQLite would have on its first such row.

    Why: executemany runs its statement once per row, and a ``CHECK (column IN (...))``
    builds its list's lookup table once per run: the outbox's two such checks (state,
    channel) and the transitions' one (to_tag) cost about 4 us a row, half the outbox's
    insert (1.55M first-load messages into a file outbox: 13.9 -> 6.9 CPU s). Multi-row
    ``VALUES`` statements (the list built once a statement) got 9.6 s. Checks reading a
    column the frame does not hold, or too many combinations for one statement, stay SQLite's.
    Elsewhere (PostgreSQL's COPY) a no-op.
    """
    checks = [check for check in table.constraints if isinstance(check, CheckConstraint)]
    if conn.dialect.name != "sqlite" or not checks:
        yield
        return
    distinct = [_distinct_checked(check, table, frame) for check in checks]
    if any(values is None for values in distinct):  # the pragma turns every check off
        yield
        return
    for check, values in zip(checks, distinct, strict=True):
        _refuse_failed_check(conn, check, table, values)  # type: ignore[arg-type]
    driver = conn.connection.driver_connection
    driver.execute("PRAGMA ignore_check_constraints=ON")
    try:
        yield
    finally:
        driver.execute("PRAGMA ignore_check_constraints=OFF")


def _distinct_checked(
    check: CheckConstraint, table: Table, frame: pd.DataFrame
) -> pd.DataFrame | None:
    """The distinct values of the columns of ``table`` a CHECK's SQL names (its quoted
    literals aside) in ``frame``; None when the frame lacks one or they are too many."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", re.sub(r"'[^']*'", "", str(check.sqltext))))
    columns = [column.name for column in table.columns if column.name in words]
    if not columns or not set(columns) <= set(frame.columns):
        return None
    distinct = frame[columns].drop_duplicates()
    return distinct if distinct.size <= SQLITE_PARAMETERS else None


def _refuse_failed_check(
    conn: Connection, check: CheckConstraint, table: Table, distinct: pd.DataFrame
) -> None:
    """Raise ``IntegrityError`` when a row of ``distinct`` fails ``check``: its SQL evaluated by
    SQLite over the values as the driver binds them (a CHECK fails on false only: NULL
    passes, as ``WHERE NOT`` leaves it out)."""
    values = driver_rows(conn, table, distinct)
    one_row = "(" + ", ".join("?" * len(distinct.columns)) + ")"
    statement = (
        f"WITH checked ({', '.join(distinct.columns)}) "
        f"AS (VALUES {', '.join([one_row] * len(values))}) "
        f"SELECT * FROM checked WHERE NOT ({check.sqltext}) LIMIT 5"
    )
    failed = conn.exec_driver_sql(statement, tuple(chain.from_iterable(values))).all()
    if failed:
        named = ", ".join(str(dict(zip(distinct.columns, row, strict=True))) for row in failed)
        reason = f"CHECK constraint failed: {check.name}: {named}"
        raise IntegrityError(statement, None, ValueError(reason))


def sqlite_insert(
    conn: Connection, table: Table, frame: pd.DataFrame, keep: Collection[str] = ()
) -> tuple[str, list[str]]:
    """SQLite: an ``INSERT`` of ``frame``'s rows into ``table`` and the columns it binds.

    A column holding one value in every row (a day's ``as_of``, run id, creation time, the
    missing values of columns a batch leaves empty) is written into the statement as the
    literal of what the driver would bind (``constant_literals``), once, rather than bound
    row after row: executemany binds each row's every parameter, and the outbox's first load
    bound 22 per message, 12 of them the same in every row (a 1M first load's 1.64M messages
    and 904k transitions, replayed: executemany 12.6 -> 11.7 CPU s). ``keep`` stays bound
    whatever it holds. The caller makes the rows of the bound columns
    (``driver_chunks(..., columns=bound)``) and adds any ``ON CONFLICT`` clause.
    """
    literals = constant_literals(conn, table, frame, keep)
    bound = [name for name in frame.columns if name not in literals]
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in [*bound, *literals])
    values = ", ".join(["?"] * len(bound) + list(literals.values()))
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({values})", bound


def constant_literals(
    conn: Connection, table: Table, frame: pd.DataFrame, keep: Collection[str] = ()
) -> dict[str, str]:
    """The columns of ``frame`` (but ``keep``) that hold one value in every row, each with
    the SQL literal of that value as the driver binds it (``sql_literal``; a value it cannot
    write stays bound). Empty when the frame has fewer than two rows, or when nothing else
    would be left to bind: a statement binds at least one column.
    """
    if len(frame) < 2:
        return {}
    constant = [name for name in frame.columns if name not in keep and _one_value(frame[name])]
    if not constant or len(constant) == len(frame.columns):
        return {}
    first = driver_rows(conn, table, frame.iloc[:1][constant])[0]
    literals = {name: sql_literal(value) for name, value in zip(constant, first, strict=True)}
    return {name: literal for name, literal in literals.items() if literal is not None}


def sql_literal(value: Any) -> str | None:
    """A driver value as an SQLite literal that stores what binding it stores (the same type
    and value): NULL, integers (flags as 0/1), finite floats (``repr`` reads back exactly),
    text with its quotes doubled; None for anything else (bytes, text holding NUL)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(int(value)) if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and "\x00" not in value:
        return "'" + value.replace("'", "''") + "'"
    return None


def _one_value(series: pd.Series) -> bool:
    """Whether every row of ``series`` holds the same value, or every row misses one.

    The first ``_SAMPLE_ROWS`` decide first: an id or a context differs within them, and
    only a column that might be constant is compared whole.
    """
    missing = series.isna()
    if missing.iloc[0]:
        return bool(missing.all())
    first = series.iloc[0]
    head = series.iloc[:_SAMPLE_ROWS]
    if missing.iloc[:_SAMPLE_ROWS].any() or not bool((head == first).all()):
        return False
    return not bool(missing.any()) and bool((series == first).all())


__all__ = [
    "SQLITE_PARAMETERS",
    "checks_once",
    "constant_literals",
    "driver_chunks",
    "driver_rows",
    "sql_literal",
    "sqlite_insert",
]
