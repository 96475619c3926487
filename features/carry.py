"""The batch day's window and history carried from the day before (``features.carry_sql``).

Aggregating a day's window reads its thirty days of events, and its history every event before
them: each day, the whole log. A batch that ran yesterday already holds all of it but a few days:
``day_window`` keeps each learner's window measures and history in a state file beside the
day's other outputs, and the next day adds the day that entered it and takes away what left it
(eight days of the log read instead of all of it). The window's last ``FRESH_DAYS`` days are not
kept: they are aggregated from the log every day and added to the kept part, so that an event
that arrives a day or two late (what the inputs' kept proof checks as new,
``features.kept_proof``) is read as any other. The learners' feature items are kept as (learner,
item, last day seen) pairs. The carried window equals the aggregated one to the last bit
(durations are summed in whole microseconds); a test holds them equal day after day.

It holds only if the log before the kept part's end the day before (its midnight
``FRESH_DAYS`` days before yesterday's) is the one yesterday read. That is proved by the events
file being the very file (its size and modification time), or, for a log appended since, by the
inputs' proof kept beside the state (its record says until which midnight this file holds the
events of the file proved the day before, the one yesterday's state read), or else by the count
and the sum of the row hashes of its events before that midnight being yesterday's (one scan of
the log; a change, an event more than two days late or a deletion before it shows).
Otherwise, and on the first day, the day is aggregated from the log as without a state, and
its state saved for the next day. The state is a cache: deleting it costs one aggregated day.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from features.atomic import replace_whole
from features.carry_sql import (
    ENTERING,
    FRESH_DAYS,
    HISTORY_COLUMNS,
    ITEM_PAIRS_AGGREGATED,
    ITEM_PAIRS_CARRIED,
    ITEMS_OF_PAIRS,
    ROW_HASH,
    boundary_days,
    boundary_lags,
    carried_measures,
    carry_template,
    carry_version,
    combined_window,
    fresh_template,
)
from features.kept_proof import kept_record, same_before
from features.parquet_source import copy_whole, parquet_source
from features.validation_report import utc_instant
from features.window_sql import _WINDOW_TABLE, WINDOW_DAYS, timestamp_literal
from features.workspace import Workspace

logger = logging.getLogger(__name__)

CARRY_SUBDIR = "carry"
"""Where, under the batch's data directory, the states are kept."""


class CarryRecord(BaseModel):
    """What a saved state was computed from (its ``.json`` beside its ``.parquet``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: date
    version: str
    events_path: str
    events_size: int
    events_mtime_ns: int
    rows: int
    """The log's events before the kept part's end: ``FRESH_DAYS`` days before ``as_of``."""
    fingerprint: int
    """The sum of their ``ROW_HASH``."""


def state_path(directory: Path, as_of: date) -> Path:
    """``<directory>/window.as_of=YYYY-MM-DD.parquet`` (its record: the same name, ``.json``)."""
    return Path(directory) / f"window.as_of={as_of.isoformat()}.parquet"


def items_path(directory: Path, as_of: date) -> Path:
    """``<directory>/items.as_of=YYYY-MM-DD.parquet``: the day's (learner, item) pairs."""
    return Path(directory) / f"items.as_of={as_of.isoformat()}.parquet"


def day_window(ws: Workspace, events: Path, directory: Path) -> tuple[str, str]:
    """The window table of the workspace's one as_of, carried or aggregated, and its history.

    On a log in time order (``in_time_order``), sets ``ws.history_table`` (the history before
    the window, per learner) and ``ws.items_table``, and saves the day's state under
    ``directory`` for the next day. A state that cannot be saved (a read-only directory) is one
    warning: the features are right either way.

    Returns:
        The window table's name (``_WINDOW_TABLE``'s columns, the learners with events in the
        window) and how it was made, for the log ("carried from ..." or "aggregated: why").
    """
    if not in_time_order(events, ws.last_as_of):
        return aggregated_window(ws), "aggregated: the log is not in time order (nothing carried)"
    record = _stamped(events, ws.last_as_of.date())
    previous, why, log = _previous(ws, directory, record)
    kept_until = _kept_until(ws.last_as_of)
    fresh = timestamp_literal(kept_until)
    pairs = _item_pairs(ws, directory, previous, fresh)
    fresh_pairs = ws.create(
        "TABLE", "fresh_pairs", ITEM_PAIRS_AGGREGATED, events=ws.events, window_start=fresh,
        until=ws.until,
    )  # fmt: skip
    ws.items_table = ws.create(
        "TABLE", "items", ITEMS_OF_PAIRS, kept=pairs, fresh=fresh_pairs, dates=ws.dates
    )
    if previous is None:
        kept = aggregated_window(ws, "kept_window", until=fresh)
        ws.history_table = ws.history()
        state = _state_of(kept, ws.history_table)
        record = record.model_copy(update=log or _log_before(ws, kept_until)[0])
        how = f"aggregated: {why}"
    else:
        state, record = _carried(ws, directory, previous, record)
        kept = state
        ws.history_table = ws.create("TABLE", "carried_history", _history_of(state))
        how = f"carried from {previous.as_of}"
    window = ws.create(
        "TABLE", "carried_window", combined_window(), kept=kept,
        fresh=_fresh_window(ws), dates=ws.dates,
    )  # fmt: skip
    saved = {state: state_path(directory, record.as_of), pairs: items_path(directory, record.as_of)}
    _save(ws, saved, record)
    if previous is not None:  # its window and history are copied out: free the ~45 columns of
        ws.con.execute(f"DROP TABLE {state}")  # every learner (~0.3 GiB at 1M) for the day
    return window, how


def _fresh_window(ws: Workspace) -> str:
    """The window's measures of the fresh days alone, per learner (``fresh_template``)."""
    return ws.create(
        "TABLE", "fresh_window", fresh_template(), events=ws.events, until=ws.until,
        **boundary_days(ws.last_as_of),
    )  # fmt: skip


def _kept_until(as_of: pd.Timestamp) -> pd.Timestamp:
    """Where the kept part of ``as_of``'s window ends: the first fresh day's midnight."""
    return as_of - pd.Timedelta(days=FRESH_DAYS)


def _item_pairs(ws: Workspace, directory: Path, previous: CarryRecord | None, fresh: str) -> str:
    """The (learner, item) pairs of the kept part's feature events (before ``fresh``), carried
    or aggregated."""
    window_start = timestamp_literal(ws.last_as_of - pd.Timedelta(days=WINDOW_DAYS))
    if previous is None:
        return ws.create(
            "TABLE", "item_pairs", ITEM_PAIRS_AGGREGATED, events=ws.events,
            window_start=window_start, until=fresh,
        )  # fmt: skip
    entering = boundary_days(ws.last_as_of)[f"day{ENTERING}"]
    return ws.create(
        "TABLE", "item_pairs", ITEM_PAIRS_CARRIED, events=ws.events, window_start=window_start,
        pairs=parquet_source(items_path(directory, previous.as_of)), entering=entering,
    )  # fmt: skip


def _stamped(events: Path, as_of: date) -> CarryRecord:
    stat = events.stat()
    return CarryRecord(
        as_of=as_of,
        version=carry_version(duckdb.__version__),
        events_path=str(events.resolve()),
        events_size=stat.st_size,
        events_mtime_ns=stat.st_mtime_ns,
        rows=0,
        fingerprint=0,
    )


def _previous(
    ws: Workspace, directory: Path, record: CarryRecord
) -> tuple[CarryRecord | None, str, dict[str, int] | None]:
    """The day before's record when its state holds for this day, else None and why not; and
    the log's count and sum before this day's kept part when the proof read them (a changed
    log's day is aggregated and keeps them: one scan, not two)."""
    day_before = record.as_of - timedelta(days=1)
    path = state_path(directory, day_before)
    saved = (path.with_suffix(".json"), path, items_path(directory, day_before))
    if not all(file.is_file() for file in saved):
        return None, f"no state of {day_before}", None
    try:
        previous = CarryRecord.model_validate_json(path.with_suffix(".json").read_bytes())
        for table in saved[1:]:
            pq.read_metadata(table)  # a file cut short has no footer
    except (OSError, ValueError) as error:  # pydantic's ValidationError, pyarrow's ArrowInvalid
        return None, f"the state of {day_before} is unreadable ({type(error).__name__})", None
    if previous.version != record.version or previous.as_of != day_before:
        return None, f"the state of {day_before} was computed otherwise (another version)", None
    if previous.events_path != record.events_path:
        return None, f"the state of {day_before} is of another log ({previous.events_path})", None
    stamp = (record.events_size, record.events_mtime_ns)
    if (previous.events_size, previous.events_mtime_ns) == stamp:
        return previous, "", None  # the very file: the log before the day before is the one read
    kept_until = _kept_until(pd.Timestamp(day_before))
    if _proved_since(directory, record, previous, kept_until):
        return previous, "", None
    before, today = _log_before(ws, kept_until, _kept_until(ws.last_as_of))
    if (before["rows"], before["fingerprint"]) != (previous.rows, previous.fingerprint):
        changed = f"{before['rows']:,} events, were {previous.rows:,}"
        return None, f"the log before {kept_until.date()} changed since ({changed})", today
    return previous, "", None


def _proved_since(
    directory: Path, record: CarryRecord, previous: CarryRecord, kept_until: pd.Timestamp
) -> bool:
    """Whether the inputs' proof kept beside the state (``features.kept_proof``, which
    ``lstep score`` runs before its day) proved this file's events before ``kept_until`` (where
    the day before's kept part ended) to be those of the file the day before's state read: then
    no scan of our own."""
    before = same_before(
        kept_record(directory),
        (record.events_path, record.events_size, record.events_mtime_ns),
        (previous.events_size, previous.events_mtime_ns),
    )
    return before is not None and pd.Timestamp(before) >= kept_until


def _log_before(ws: Workspace, *bounds: pd.Timestamp) -> list[dict[str, int]]:
    """For each bound, ``rows`` and ``fingerprint``: the count and the sum of the row hashes of
    the log's events before it (one scan)."""
    sums = ", ".join(
        f"count(*) FILTER (ts < {timestamp_literal(bound)}), "
        f"coalesce(sum({ROW_HASH}) FILTER (ts < {timestamp_literal(bound)}), 0)"
        for bound in bounds
    )
    values = ws.con.execute(
        f"SELECT {sums} FROM {ws.events} WHERE ts < {timestamp_literal(max(bounds))}"
    ).fetchall()[0]
    return [
        {"rows": int(values[2 * index]), "fingerprint": int(values[2 * index + 1])}
        for index in range(len(bounds))
    ]


def _carried(
    ws: Workspace, directory: Path, previous: CarryRecord, record: CarryRecord
) -> tuple[str, CarryRecord]:
    """The day's state (the day before's plus the days where a kept measure moves) and its
    record (the day before's count and sum of the row hashes plus the entering day's)."""
    as_of = ws.last_as_of
    state = ws.create(
        "TABLE", "carry", carry_template(),
        state=parquet_source(state_path(directory, previous.as_of)),
        events=ws.events,
        until=ws.until,
        **boundary_days(as_of),
        window_start=timestamp_literal(as_of - pd.Timedelta(days=WINDOW_DAYS)),
    )  # fmt: skip
    rows, fingerprint = ws.con.execute(
        f"SELECT coalesce(sum(day{ENTERING}), 0), coalesce(sum(day_fingerprint), 0) FROM {state}"
    ).fetchall()[0]
    added = {
        "rows": previous.rows + int(rows),
        "fingerprint": previous.fingerprint + int(fingerprint),
    }
    return state, record.model_copy(update=added)


def in_time_order(events: Path, as_of: pd.Timestamp) -> bool:
    """Whether the log's row groups are in time order enough that the boundary days before
    ``as_of`` lie in at most half of the row groups the aggregated window and history read (all
    those before ``as_of``), by their ``ts`` statistics.

    On a log whose row groups each span most days (one stored learner by learner) the days read
    cost more than the window and the history they replace (a million learners in learner
    order, six days before the fresh part: 16 s against 3.7 + 0.8 s; in time order 2.4-3.0 s
    against 7.9-8.1 + 1.0 s), plus the state's upkeep: nothing is carried.
    """
    metadata = pq.ParquetFile(events).metadata
    column = metadata.schema.names.index("ts")
    lags = [*range(1, FRESH_DAYS + 1), *boundary_lags()]
    days = [(as_of - pd.Timedelta(days=lag), as_of - pd.Timedelta(days=lag - 1))
            for lag in lags]  # fmt: skip
    before = in_days = 0
    for index in range(metadata.num_row_groups):
        stats = metadata.row_group(index).column(column).statistics
        if stats is None or not stats.has_min_max:
            return False
        low, high = _naive(stats.min), _naive(stats.max)
        before += low < as_of
        in_days += any(low < end and high >= start for start, end in days)
    return 2 * in_days <= before


def _naive(value: object) -> pd.Timestamp:
    """A parquet statistic of ``ts`` as a naive UTC timestamp."""
    return utc_instant(value).tz_localize(None)


def aggregated_window(ws: Workspace, role: str = "window", *, until: str | None = None) -> str:
    """The window's aggregates per (learner, as_of) with an event in it (``_WINDOW_TABLE``, named
    for ``role``), of the events before ``until`` (a timestamp literal) when given."""
    return ws.create("TABLE", role, _WINDOW_TABLE, **ws.window_parts(until=until))


def _state_of(kept: str, history: str) -> str:
    """The day's state (as ``carry_template``'s columns) of an aggregated kept part and history."""
    measures = ", ".join(
        f"w.{name} AS {name}" if name.endswith("_ts") else f"coalesce(w.{name}, 0) AS {name}"
        for name in carried_measures()
    )
    history_columns = ", ".join(f"h.{name[2:]} AS {name}" for name in HISTORY_COLUMNS)
    return (
        f"(SELECT coalesce(w.customer_id, h.customer_id) AS customer_id, {measures}, "
        f"{history_columns} FROM {kept} AS w FULL JOIN {history} AS h USING (customer_id))"
    )


def _history_of(state: str) -> str:
    """``_HISTORY_TABLE`` of a state: its learners with events before the window."""
    columns = ", ".join(f"{name} AS {name[2:]}" for name in HISTORY_COLUMNS)
    return (
        f"CREATE TEMP TABLE {{name}} AS SELECT customer_id, 1 AS bucket, {columns} "
        f"FROM {state} WHERE h_last_ts IS NOT NULL"
    )


def _save(ws: Workspace, tables: dict[str, Path], record: CarryRecord) -> None:
    """Write the day's tables (or queries) to their paths, then its record (last: it says the
    state is whole), each file whole or not at all (``features.parquet_source.copy_whole``)."""
    directory = next(iter(tables.values())).parent
    record_path = state_path(directory, record.as_of).with_suffix(".json")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        record_path.unlink(missing_ok=True)
        for table, path in tables.items():
            columns = ", ".join(_state_columns()) if path.name.startswith("window.") else "*"
            copy_whole(ws.con, f"SELECT {columns} FROM {table}", path)
        replace_whole(record_path, lambda partial: partial.write_text(record.model_dump_json()))
        _remove_older(directory, record.as_of - timedelta(days=1))
    except (OSError, duckdb.IOException) as error:
        logger.warning(
            "features: the day's window could not be kept in %s (%s); the next day aggregates "
            "its window from the log", directory, error,
        )  # fmt: skip


def _state_columns() -> list[str]:
    return ["customer_id", *carried_measures(), *HISTORY_COLUMNS]


def _remove_older(directory: Path, keep_from: date) -> None:
    """Remove the states of days before ``keep_from`` (a rerun of the last day needs the one
    before it)."""
    for path in directory.glob("*.as_of=*"):
        day = path.name.partition(".as_of=")[2][:10]
        if day < keep_from.isoformat():
            path.unlink(missing_ok=True)


__all__ = ["CARRY_SUBDIR", "CarryRecord", "day_window", "state_path"]
