"""How DuckDB reads a parquet file of the event store: the path checked, the columns typed.

Shared by the features (``features.workspace``), the check of the inputs
(``features.parquet_check``) and the readers in ``serving`` that scan the event store with DuckDB;
``copy_whole`` writes the states the batch keeps beside its data (``features.carry``,
``features.kept_proof``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from features.atomic import replace_whole
from features.layout import PARQUET_SUFFIXES
from features.window_sql import _sql_literal


def parquet_path(data: str | Path, role: str) -> Path:
    """The path of the ``role``'s parquet file (events, customers), checked to be one.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not named as parquet.
    """
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"{role}: no such file {path}")
    if path.suffix.lower() not in PARQUET_SUFFIXES:
        raise ValueError(f"{role}: expected a parquet file, got {path.name}")
    return path


def parquet_source(path: Path, options: str = "") -> str:
    """``read_parquet`` of a file (with the reader's ``options``, e.g. ``", can_have_nan = true"``)
    as a FROM-clause in which every timestamp is one ``epoch_us`` takes.

    pandas writes a zoned datetime in nanoseconds, which DuckDB reads as TIMESTAMPTZ_NS, and
    DuckDB (2.0) has no ``epoch_us`` of that type: such a column is made naive UTC microseconds,
    truncated as the validation truncates them (``features.workspace.naive_utc``), not rounded
    as a cast would.
    """
    reader = f"read_parquet({_sql_literal(str(path))}{options})"
    zoned = [
        field.name
        for field in pq.read_schema(path)
        if pa.types.is_timestamp(field.type) and field.type.tz and field.type.unit == "ns"
    ]
    if not zoned:
        return reader
    made = ", ".join(f'make_timestamp(epoch_ns("{name}") // 1000) AS "{name}"' for name in zoned)
    return f"(SELECT * REPLACE ({made}) FROM {reader})"


def copy_whole(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """DuckDB's ``COPY (query) TO path`` as parquet, written whole or not at all
    (``features.atomic.replace_whole``).

    Raises:
        OSError, duckdb.IOException: the file cannot be written (``path`` untouched).
    """
    replace_whole(
        path,
        lambda partial: con.execute(
            f"COPY ({query}) TO {_sql_literal(str(partial))} (FORMAT parquet)"
        ),
    )


__all__ = ["copy_whole", "parquet_path", "parquet_source"]
