"""Parquet files kept beside the data with the key they were computed under.

The KPIs keep what a completed day adds (``serving.app.decision_runs``' run ledger,
``serving.app.moved_scores``) in parquet files whose schema metadata holds a key naming
everything the content depends on. A reader takes a file only under the same key: a missing,
unreadable or differently keyed file is a miss, never an error, and the caller computes the
content again. A file is written to a temporary name and renamed, so a reader never sees half
of one; a workspace that cannot be written costs only speed (``features.atomic``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features.atomic import write_atomically


def key_of(path: Path, entry: bytes) -> str | None:
    """The key ``path`` was written under (its footer only), or None: no such readable file."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    return metadata.get(entry, b"").decode() or None


def read_keyed(path: Path, entry: bytes, key: str) -> pa.Table | None:
    """The table of ``path`` when it was written under ``key``, else None."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    return table if (table.schema.metadata or {}).get(entry, b"").decode() == key else None


def write_keyed(path: Path, table: pa.Table, entry: bytes, key: str) -> bool:
    """Write ``table`` under ``key`` (temporary name, then rename).

    Returns:
        Whether it was written (False: the directory or the file could not be).
    """
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), entry: key.encode()})
    return write_atomically(path, lambda partial: pq.write_table(table, partial))


__all__ = ["key_of", "read_keyed", "write_keyed"]
