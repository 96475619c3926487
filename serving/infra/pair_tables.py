"""Temporary tables of (customer_id, campaign_id) pairs that the outbox's statements join.

The planner's window counts (``outbox_sql.window_counts``, through the store's reader process)
and the day's cancellations (``outbox_sql.cancel_pairs``, on the day's connection) drive their
joins from a table of the day's pairs, distinct and in key order, through the outbox's
(customer_id, campaign_id, ...) index.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pyarrow as pa
from sqlalchemy.engine import Connection

from serving.core.frames import distinct_sorted
from serving.core.messages import PAIR_COLUMNS
from serving.infra.arrow_reads import TemporaryRows
from serving.infra.sql import temporary_table

_PAIR_KINDS = {"customer_id": "VARCHAR(64)", "campaign_id": "VARCHAR(16)", "since": "DATE"}


def unique_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """The distinct (customer_id, campaign_id) ``pairs`` with their other columns (a pair's
    first row), in key order (``sql.temporary_table``), nulls last (``distinct_sorted``)."""
    return distinct_sorted(pairs, PAIR_COLUMNS)


@contextmanager
def pairs_table(conn: Connection, name: str, pairs: pd.DataFrame) -> Iterator[None]:
    """A temporary table ``name`` of the distinct (customer_id, campaign_id) ``pairs`` and the
    frame's other columns (``since``: a date), for the statements of the block to join.

    Dates as the ISO text SQLAlchemy stores on SQLite.
    """
    unique = unique_pairs(pairs)
    postgres = conn.dialect.name == "postgresql"
    columns = [
        unique[name].tolist() if postgres or name != "since" else _iso_days(unique[name])
        for name in unique.columns
    ]
    values = list(zip(*columns, strict=True))
    kinds = {column: _PAIR_KINDS[column] for column in unique.columns}
    with temporary_table(conn, name, kinds, values):
        yield


def temporary_pairs(name: str, pairs: pd.DataFrame) -> TemporaryRows:
    """``pairs_table``'s rows as a ``read_table`` temporary table (``since`` as days)."""
    unique = unique_pairs(pairs)
    rows = pa.table(
        {
            column: pa.array(
                unique[column], pa.date32() if column == "since" else pa.string(), from_pandas=True
            )
            for column in unique.columns
        }
    )
    return TemporaryRows(name, {column: _PAIR_KINDS[column] for column in unique.columns}, rows)


def _iso_days(days: pd.Series) -> list[str]:
    """Dates as ISO text, each distinct one formatted once (a few window starts per day)."""
    texts = {day: day.isoformat() for day in days.unique()}
    return days.map(texts).tolist()


__all__ = ["pairs_table", "temporary_pairs", "unique_pairs"]
