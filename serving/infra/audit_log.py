"""The audit log read in one typed pass: the driver's rows, each column converted once.

``read_frame`` builds a SQLAlchemy row per transition and runs the instant type's result
processor per value: ~20 s of the dashboard's first page on a million learners' 1.4 million
transitions. The DBAPI cursor's tuples (``driver_frame``) typed by the column (dates and
instants parsed by pandas, as SQLite stores them as ISO text) give the same frame in a fraction
of that (``tests/serving/infra/test_audit_log.py`` compares the two on SQLite and PostgreSQL).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Connection, Select

from serving.core.frames import TRANSITIONS_COLUMNS, stored_frame
from serving.infra.sql import driver_frame


def read_transitions(conn: Connection, stmt: Select[Any]) -> pd.DataFrame:
    """The transitions ``stmt`` selects (``transitions_select``), typed by ``TRANSITIONS_SCHEMA``.

    Dates come as ISO text (SQLite) or ``date`` objects (PostgreSQL); instants as naive UTC
    text (SQLite, as ``UtcDateTime`` stores them) or aware datetimes: both parse to the same.
    """
    frame = driver_frame(conn, stmt)
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return stored_frame(frame, TRANSITIONS_COLUMNS)


__all__ = ["read_transitions"]
