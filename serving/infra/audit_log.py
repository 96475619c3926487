"""The audit log read in one typed pass: Arrow columns, each converted once.

``read_frame`` builds a SQLAlchemy row per transition and runs the instant type's result
processor per value: ~20 s of the dashboard's first page on a million learners' 1.4 million
transitions. The driver's tuples typed by the column (``driver_frame``) took ~7 s for a 1M
learners' 961k transitions, twice in each ``lstep report``; read as Arrow
(``arrow_reads.read_table``: ADBC's SQLite driver builds the columns in C, in the store's reader
process) they take a fraction of that. ``tests/serving/infra/test_audit_log.py`` compares the
frame with the ORM's on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Select

from serving.core.frames import DAY, INSTANT, TEXT, TRANSITIONS_COLUMNS, stored_frame
from serving.infra.arrow_reads import read_table

_ARROW_TYPES = {
    "int64": pa.int64(),
    TEXT: pa.string(),
    "float64": pa.float64(),
    DAY: pa.date32(),  # ISO text on SQLite, a date on PostgreSQL
    INSTANT: pa.timestamp("us"),  # UTC: naive text on SQLite, converted on PostgreSQL
}


def read_transitions(conn: Connection, stmt: Select[Any]) -> pd.DataFrame:
    """The transitions ``stmt`` selects (``transitions_select``), typed by their schema."""
    names = [column.name for column in stmt.selected_columns]
    schema = pa.schema([(name, _ARROW_TYPES[TRANSITIONS_COLUMNS.dtypes[name]]) for name in names])
    frame = read_table(conn, stmt, schema).to_pandas(date_as_object=False)
    return stored_frame(frame, TRANSITIONS_COLUMNS.select(names))


__all__ = ["read_transitions"]
