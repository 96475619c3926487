"""What the campaign measurement reads at the edge: the outbox, the feedback and the event log.

``serving.app.campaign_effect`` is pure over frames; ``lstep campaigns``, ``lstep report`` and the
dashboard's value page read its inputs here. The event log comes two ways:

- a validated frame (a log that is not parquet, or that DuckDB could not prove clean: validated
  whole, as the batch does then), measured as it is;
- the event store's parquet file once proved clean (``features.parquet_check``, what the batch
  trusts): only the re-engagement events of the outbox's learners are read from it, plus one
  ``LOG_END`` row carrying the whole log's last instant. At 1M learners x 60 days (59M events)
  validating the whole log took ~60 s at 9.4 GiB before a report could measure anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.parquet_source import parquet_source
from features.workspace import connect
from serving.app.campaign_effect import (
    REENGAGEMENT_KINDS,
    CampaignRecords,
    EffectSettings,
    campaign_effect,
)
from serving.app.kpi_inputs import last_instant

LOG_END = "log_end"
"""The event type of the one row that carries the whole log's last instant into the narrowed
read: the campaign effect dates complete windows by the log's last event, which the outbox
learners' re-engagement events alone could place too early (it is no re-engagement kind, so it
converts nobody)."""


def reengagement_events(
    path: Path, customer_ids: list[str], since: date | None = None
) -> pd.DataFrame | None:
    """The re-engagement events of ``customer_ids`` in the events parquet (those from the day
    ``since`` on, when given), plus ``LOG_END``.

    The file is read as it is: give only a log that meets the events contract (proved clean,
    or the event store the batch wrote and reads). ``since`` is exact for the measure when it
    is the earliest ``due_on`` of the outbox read: a conversion window opens on its message's
    due day, so no earlier day can convert anyone.

    DuckDB scans the file (its filters read the other columns of matching rows only; the log's
    last instant is ``kpi_inputs.last_instant``'s); the learners are picked from what it
    returns. On a 59M-event log whose outbox names 921k learners: Arrow's dataset scan
    with every row's membership tested 9.7 s, filtered by kinds and days 6.3 s, DuckDB 1.2-1.9 s.

    Returns:
        customer_id, ts (aware UTC), event_type; None when there is no file.
    """
    if not Path(path).exists():
        return None
    since_us = _since_us(path, since)
    con = connect()
    try:
        source = parquet_source(Path(path))
        # the day's bound only on a timestamp column: DuckDB binds epoch_us(ts) even when the
        # bound is NULL, and a text ts (a log the validation accepts) has no epoch_us
        bound = "" if since_us is None else f" AND epoch_us(ts) >= {since_us}"
        kept = con.sql(_REENGAGEMENT_SQL.format(source=source) + bound).to_arrow_table()
    finally:
        con.close()
    learners = pa.array(customer_ids, pa.string())
    events = kept.filter(pc.is_in(kept.column("customer_id"), learners)).to_pandas()
    end = pd.DataFrame({"customer_id": [""], "ts": [last_instant(path)], "event_type": [LOG_END]})
    both = pd.concat([events, end.dropna()], ignore_index=True)
    return both.assign(ts=pd.to_datetime(both["ts"], utc=True))


_KINDS = ", ".join(f"'{kind}'" for kind in REENGAGEMENT_KINDS)
_REENGAGEMENT_SQL = f"""
SELECT CAST(customer_id AS VARCHAR) AS customer_id, ts, CAST(event_type AS VARCHAR) AS event_type
FROM {{source}}
WHERE event_type IN ({_KINDS})
"""


def _since_us(path: Path, since: date | None) -> int | None:
    """``since``'s UTC midnight in epoch microseconds, for a log whose ``ts`` is a timestamp
    (naive means UTC, as everywhere); None (no filter) otherwise."""
    if since is None or not pa.types.is_timestamp(pq.read_schema(path).field("ts").type):
        return None
    return int(pd.Timestamp(since, tz="UTC").value // 1_000)


def measured_effect(
    records: CampaignRecords,
    events: pd.DataFrame | str | Path,
    as_of: date,
    settings: EffectSettings | None = None,
    windows: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """``campaign_effect`` of the records' outbox and feedback on ``as_of`` (what ``lstep
    campaigns`` shows and the report summarises).

    Args:
        records: the state store (its outbox's measured columns, its feedback).
        events: the validated log, or the path of a parquet log proved clean (only the outbox
            learners' re-engagement events are read from it, see the module docstring).
        as_of: the day asked (data time).
        settings: the default conversion window and the thresholds.
        windows: conversion windows in days by campaign id.

    Raises:
        FileNotFoundError: ``events`` is a path to no file.
    """
    outbox = records.measured_outbox(until=as_of)
    if not isinstance(events, pd.DataFrame):
        learners = sorted(outbox["customer_id"].astype(str).unique())
        log = reengagement_events(Path(events), learners, since=_first_due(outbox))
        if log is None:
            raise FileNotFoundError(f"events: no such file {events}")
        events = log
    return campaign_effect(outbox, records.feedback_frame(), events, as_of, settings, windows)


def _first_due(outbox: pd.DataFrame) -> date | None:
    """The earliest day a message of ``outbox`` falls due (None: no message)."""
    return None if outbox.empty else pd.Timestamp(outbox["due_on"].min()).date()


__all__ = ["LOG_END", "measured_effect", "reengagement_events"]
