"""Churn labels (DESIGN §4): computed from the event log, or brought by the user.

y(t) = 1 iff the learner has no event in [t, t + W) or a ``subscription_cancelled`` in it, with
t = 00:00 UTC of the as_of day and W = ``horizon_days`` (30 by default, the ST_006 rule).

A label needs its whole window: rows whose [t, t + W) does not end by ``observed_until`` (the
instant up to which the log is complete) are left out. How many were left out is never silent: it
is logged and kept in ``labels.attrs["excluded_incomplete"]`` of the returned frame (with
``attrs["observed_until"]`` and ``attrs["horizon_days"]``). ``attrs`` do not survive every pandas
operation, so read them straight from the returned frame.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path

import pandas as pd
from pandera.errors import SchemaErrors

from features.schemas import LabelsSchema
from features.window_sql import timestamp_literal
from features.windows import normalize_spine
from features.workspace import TableInput, Workspace, workspace

logger = logging.getLogger(__name__)

CANCELLATION = "subscription_cancelled"
LABEL_COLUMNS = ("customer_id", "as_of", "churned")
LABEL_EVENT_COLUMNS = ("customer_id", "ts", "event_type")
"""The events' columns a label reads: who, when, and whether it was a cancellation."""

_LAST_EVENT = "SELECT max(ts) FROM {events}"

# t is a midnight and W whole days, so the label window [t, t + W) is exactly the UTC days
# t .. t + W - 1. Events are matched to those days by equality (a hash join; a range join on ts
# against a few dates makes DuckDB pick a much slower IEJoin), then to the spine rows by
# (customer_id, as_of).
_LABELS = """
WITH label_days AS (
    SELECT d.as_of, CAST(d.as_of AS DATE) + CAST(r.day_offset AS INTEGER) AS day
    FROM (SELECT DISTINCT as_of FROM {spine}) AS d CROSS JOIN range(0, {horizon}) AS r(day_offset)
),
hits AS (
    SELECT e.customer_id, d.as_of,
           count(*) FILTER (e.event_type = '{cancellation}') AS cancellations
    FROM {events} AS e JOIN label_days AS d ON CAST(e.ts AS DATE) = d.day
    WHERE e.ts >= {first_start} AND e.ts < {last_end}
      AND e.customer_id IN (SELECT customer_id FROM {spine})
    GROUP BY e.customer_id, d.as_of
)
SELECT s.row_id, s.customer_id, s.as_of,
       -- no event in the window (no hits row) or a cancellation in it
       CAST(h.customer_id IS NULL OR h.cancellations > 0 AS TINYINT) AS churned
FROM {spine} AS s LEFT JOIN hits AS h USING (customer_id, as_of)
ORDER BY s.row_id
"""


def compute_labels(
    events: TableInput,
    spine: pd.DataFrame,
    *,
    horizon_days: int = 30,
    observed_until: date | datetime | None = None,
) -> pd.DataFrame:
    """Label each (customer_id, as_of) of ``spine`` whose label window is complete.

    Args:
        events: events frame or parquet path (DESIGN §3), validated upstream.
        spine: the (customer_id, as_of) pairs to label, e.g. a feature frame's keys; other
            columns are ignored. as_of: dates or midnight timestamps (00:00 UTC of that day).
        horizon_days: W, the churn window in days.
        observed_until: the instant up to which the log is complete; a date means 00:00 UTC of
            that day, a naive datetime is UTC. Default: the UTC midnight after the last event.

    Returns:
        customer_id, as_of (naive datetime64[us]), churned (int8 0/1), in the spine's order,
        without the incomplete rows; ``attrs["excluded_incomplete"]`` says how many those were.

    Raises:
        ValueError: on a bad horizon or spine, or an empty log without ``observed_until``.
    """
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}")
    pairs = normalize_spine(spine)
    with workspace() as ws:
        ws.register_events(events)
        until = _observed_until(ws, observed_until)
        complete = pairs["as_of"] + pd.Timedelta(days=horizon_days) <= until
        labels = _label_rows(ws, pairs[complete], horizon_days)
    excluded = int((~complete).sum())
    if excluded:
        logger.info(
            "labels: %d of %d rows excluded, their %d-day label window ends after %s",
            excluded, len(pairs), horizon_days, until,
        )  # fmt: skip
    labels.attrs.update(
        excluded_incomplete=excluded, observed_until=until, horizon_days=horizon_days
    )
    return labels


def load_labels(path: str | Path) -> pd.DataFrame:
    """Read bring-your-own labels (parquet or CSV) and validate them with ``LabelsSchema``.

    Returns:
        customer_id, as_of (naive datetime64[us] at midnight), churned (int8 0/1).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: on an unsupported file type, or naming the file, column, row count and a few
            offending values when the content breaks the labels contract.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"labels: no such file {source}")
    raw = _read_table(source)
    try:
        return LabelsSchema.validate(raw, lazy=True)
    except SchemaErrors as errors:
        raise ValueError(_describe_failures(source.name, errors.failure_cases)) from errors


def _observed_until(ws: Workspace, given: date | datetime | None) -> pd.Timestamp:
    """``given`` as a naive UTC timestamp, or the UTC midnight after the log's last event."""
    if given is not None:
        instant = pd.Timestamp(given)
        return instant.tz_convert("UTC").tz_localize(None) if instant.tzinfo else instant
    last_event = ws.con.execute(_LAST_EVENT.format(events=ws.events)).fetchall()[0][0]
    if last_event is None:
        raise ValueError("events: the log is empty, so observed_until must be given")
    return pd.Timestamp(last_event).floor("D") + pd.Timedelta(days=1)


def _label_rows(ws: Workspace, pairs: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    if pairs.empty:
        return _typed_labels(pairs.assign(churned=pd.Series(dtype="int8")))
    spine = ws.register("label_spine", pairs.assign(row_id=range(len(pairs))))
    last_end = pairs["as_of"].max() + pd.Timedelta(days=horizon_days)
    sql = _LABELS.format(
        spine=spine,
        events=ws.events,
        cancellation=CANCELLATION,
        horizon=int(horizon_days),
        first_start=timestamp_literal(pairs["as_of"].min()),
        last_end=timestamp_literal(last_end),
    )
    return _typed_labels(ws.con.execute(sql).df())


def _typed_labels(raw: pd.DataFrame) -> pd.DataFrame:
    frame = raw[list(LABEL_COLUMNS)].astype(
        {"customer_id": "str", "as_of": "datetime64[us]", "churned": "int8"}
    )
    return LabelsSchema.validate(frame.reset_index(drop=True))


def _read_table(source: Path) -> pd.DataFrame:
    suffix = source.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(source)
    if suffix == ".csv":
        # ids stay text (no "007" -> 7); as_of is parsed by the schema
        return pd.read_csv(source, dtype={"customer_id": "str"})
    raise ValueError(f"labels: {source.name}: expected a .parquet or .csv file")


_COLUMN_SET_CHECKS = {
    "column_in_dataframe": "missing columns",
    "column_in_schema": "unexpected columns",
}
_UNIQUE_PAIRS = "multiple_fields_uniqueness"


def _describe_failures(file_name: str, failures: pd.DataFrame) -> str:
    """One line per failed check: where, how many rows and a few offending values."""
    lines = []
    for check, cases in failures.groupby("check", sort=False):
        values = cases["failure_case"].astype(str)
        if check in _COLUMN_SET_CHECKS:
            lines.append(f"{file_name}: {_COLUMN_SET_CHECKS[check]} {sorted(set(values))}")
        elif check == _UNIQUE_PAIRS:
            ids = ", ".join(values[cases["column"] == "customer_id"].unique()[:3])
            rows = cases["index"].nunique()
            lines.append(f"{file_name}: {rows} rows repeat a (customer_id, as_of) pair ({ids})")
        else:
            for column, column_cases in cases.groupby("column", sort=False):
                examples = ", ".join(column_cases["failure_case"].astype(str).head(3))
                lines.append(
                    f"{file_name}: column {column}: {len(column_cases)} rows fail check "
                    f"{check} (e.g. {examples})"
                )
    return "\n".join(lines)


__all__ = ["CANCELLATION", "LABEL_EVENT_COLUMNS", "compute_labels", "load_labels"]
