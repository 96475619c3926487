"""Tiny event and customer frames for the window and label tests, in the contract dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EVENT_COLUMNS = ["customer_id", "ts", "event_type", "duration_s", "channel", "item"]
CUSTOMER_COLUMNS = ["customer_id", "product_tag", "enrolled_at", "mrr"]
DEFAULT_ENROLLED = "2024-01-01 00:00:00"


def utc(text: str) -> pd.Timestamp:
    """A UTC instant from text such as ``"2024-03-02 00:00:00"``."""
    return pd.Timestamp(text, tz="UTC").as_unit("us")


def events_frame(rows: Sequence[Sequence]) -> pd.DataFrame:
    """Events from rows ``[customer_id, ts, event_type, duration_s, channel, item, times?]``.

    Missing trailing fields are null; the optional 7th field repeats the row that many times.
    """
    expanded = []
    for row in rows:
        fields = [*row[:6], *[None] * (6 - len(row[:6]))]
        expanded.extend([fields] * (row[6] if len(row) > 6 else 1))
    frame = pd.DataFrame(expanded, columns=EVENT_COLUMNS)
    return frame.astype(
        {
            "customer_id": "str",
            "ts": "datetime64[us, UTC]",
            "event_type": "str",
            "duration_s": "float64",
            "channel": "str",
            "item": "str",
        }
    )


def customers_frame(rows: Sequence[Sequence]) -> pd.DataFrame:
    """Customers from rows ``[customer_id, enrolled_at?, product_tag?, mrr?]``.

    Defaults: enrolled 2024-01-01, product PT_001, mrr 49.0 (give ``None`` explicitly for null).
    """
    defaults = [None, DEFAULT_ENROLLED, "PT_001", 49.0]
    records = [[*row, *defaults[len(row) :]] for row in rows]
    frame = pd.DataFrame(records, columns=["customer_id", "enrolled_at", "product_tag", "mrr"])
    return frame[CUSTOMER_COLUMNS].astype(
        {
            "customer_id": "str",
            "product_tag": "str",
            "enrolled_at": "datetime64[us, UTC]",
            "mrr": "float64",
        }
    )


def time_ordered_log(events: Path, out: Path, *, until: pd.Timestamp | None = None) -> Path:
    """``out/events.parquet``: the events of ``events`` before ``until`` ordered by time, in
    ~150 row groups (a log appended day after day, in the simulated log's days)."""
    table = pq.read_table(events).sort_by([("ts", "ascending")])
    if until is not None:
        table = table.filter(pc.less(table["ts"], pa.scalar(until, table["ts"].type)))
    path = out / "events.parquet"
    pq.write_table(table, path, row_group_size=max(1, table.num_rows // 150))
    return path
