"""An index over the event store: one learner's events by id, without scanning the log.

``events.parquet`` is in arrival order; reading one learner from it means scanning it all (~200 ms
at the demo's size, seconds at millions of learners). ``EventIndex.open`` keeps a sidecar beside
it, built once per version of the log (its size and mtime) and reused by every later process:

- ``events.arrow``: the events sorted by (customer_id, ts), as an uncompressed Arrow IPC file of
  the columns ``features.online_inputs.LearnerEvents`` takes (ts in microseconds, event type and
  channel as codes, duration, item). It is memory-mapped: a learner's rows are a zero-copy slice,
  and the pages of learners nobody asks about never enter memory.
- ``ids.npy`` (fixed-width bytes, sorted), ``starts.npy`` and ``stops.npy`` (row ranges):
  memory-mapped too, looked up by binary search.
- ``meta.json``: the log's stamp, row and learner counts and when each event type first appeared
  (``features.online_inputs.TypeAvailability``, which every learner's features take from the
  whole log), written last (``serving.infra.sidecars``: built under a lock, renamed into place).

The sort runs in DuckDB (out of core, bounded memory) and streams into the file batch by batch,
so no step holds the log's events as Python objects: a 5M-learner log needs its ids (fixed-width
bytes) and one batch at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.online_inputs import (
    EVENT_TYPES,
    NO_CHANNEL,
    OTHER_CODE,
    LearnerEvents,
    TypeAvailability,
)
from features.parquet_source import parquet_source
from features.vocabulary import CHANNELS
from features.windows import event_type_firsts
from features.workspace import connect
from rules.codes import one_array
from serving.infra.sidecars import fixed_width, open_sidecar, read_meta, sorted_position

logger = logging.getLogger("bentoml.lstep")

FORMAT_VERSION = 2
"""Bumped when the sidecar's layout changes: an older sidecar is rebuilt, never misread."""
BATCH_ROWS = 1_000_000
"""Rows DuckDB hands over at a time while the sorted file is written."""
SORT_MEMORY_LIMIT = "1GB"
"""DuckDB's memory for the sort: beyond it the sort spills to disk, so a build beside a running
service stays small whatever the log's size."""
EVENTS_FILE, IDS_FILE, STARTS_FILE, STOPS_FILE = (
    "events.arrow",
    "ids.npy",
    "starts.npy",
    "stops.npy",
)


def _code_sql(column: str, values: tuple[str, ...], other: int, null: int) -> str:
    cases = " ".join(f"WHEN '{value}' THEN {code}" for code, value in enumerate(values))
    coded = f"CASE {column} {cases} ELSE {other} END"
    return f"CAST(CASE WHEN {column} IS NULL THEN {null} ELSE {coded} END AS TINYINT)"


_SORTED_SQL = f"""
SELECT CAST(customer_id AS VARCHAR) AS customer_id,
       epoch_us(ts) AS ts_us,
       {_code_sql("CAST(event_type AS VARCHAR)", EVENT_TYPES, OTHER_CODE, OTHER_CODE)} AS type_code,
       CAST(duration_s AS DOUBLE) AS duration_s,
       {_code_sql("CAST(channel AS VARCHAR)", CHANNELS, len(CHANNELS), NO_CHANNEL)} AS channel_code,
       CAST(item AS VARCHAR) AS item
FROM {{source}}
ORDER BY customer_id, ts_us
"""
"""The log sorted by learner and time, with the codes of ``features.online``."""


@dataclass(frozen=True)
class EventIndex:
    """The sorted, memory-mapped events of a log and the row range of each learner.

    Attributes:
        directory: the sidecar of this version of the log.
        table: the sorted events (memory-mapped).
        ids: the learners' ids, sorted (fixed-width bytes, memory-mapped).
        starts, stops: each learner's rows in ``table``.
        availability: when each event type first appeared in the log.
    """

    directory: Path
    table: pa.Table
    ids: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    availability: TypeAvailability

    @classmethod
    def open(cls, events_path: Path, index_root: Path) -> EventIndex:
        """The index of ``events_path``: reused when ``index_root`` holds it, else built there.

        Raises:
            FileNotFoundError: no such events file.
            OSError: the index cannot be written under ``index_root``.
        """
        directory = open_sidecar(events_path, index_root, version=FORMAT_VERSION, write=_write)
        return cls._read(directory)

    @classmethod
    def _read(cls, directory: Path) -> EventIndex:
        source = pa.memory_map(str(directory / EVENTS_FILE), "r")
        table = pa.ipc.open_file(source).read_all()
        firsts = read_meta(directory)["type_firsts"]
        return cls(
            directory=directory,
            table=table,
            ids=np.load(directory / IDS_FILE, mmap_mode="r"),
            starts=np.load(directory / STARTS_FILE, mmap_mode="r"),
            stops=np.load(directory / STOPS_FILE, mmap_mode="r"),
            availability=TypeAvailability(firsts["first_us"], firsts["first_timed_us"]),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, customer_id: str) -> tuple[int, int]:
        """The learner's row range in ``table`` ((0, 0) for a learner without events)."""
        position = sorted_position(self.ids, customer_id)
        if position < 0:
            return 0, 0
        return int(self.starts[position]), int(self.stops[position])

    def events_of(self, customer_id: str) -> LearnerEvents:
        """The learner's events, sorted by time (none for an id the log does not hold)."""
        start, stop = self.rows_of(customer_id)
        if start == stop:
            return LearnerEvents.empty()
        rows = self.table.slice(start, stop - start)
        return LearnerEvents(
            ts_us=_numbers(rows, "ts_us"),
            type_code=_numbers(rows, "type_code"),
            duration_s=_numbers(rows, "duration_s"),
            channel_code=_numbers(rows, "channel_code"),
            item=np.array(rows.column("item").to_pylist(), dtype=object),
        )


def _numbers(rows: pa.Table, name: str) -> np.ndarray:
    """A numeric column as numpy (nulls of duration_s as NaN)."""
    return one_array(rows.column(name)).to_numpy(zero_copy_only=False)


def _write(events_path: Path, directory: Path) -> dict:
    """Write the sidecar's files; return the facts ``meta.json`` keeps."""
    rows, learners = _write_sorted(events_path, directory)
    availability = TypeAvailability.of_firsts(event_type_firsts(events_path))
    logger.info("event index of %s: %d events of %d learners", events_path, rows, learners)
    firsts = {"first_us": availability.first_us, "first_timed_us": availability.first_timed_us}
    return {"rows": rows, "learners": learners, "type_firsts": firsts}


def _write_sorted(events_path: Path, directory: Path) -> tuple[int, int]:
    """Write the sorted events and the learners' row ranges; return (rows, learners)."""
    con = connect(memory_limit=SORT_MEMORY_LIMIT)
    try:
        sql = _SORTED_SQL.format(source=parquet_source(Path(events_path)))
        reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
        runs = _Runs()
        rows = 0
        schema = reader.schema.remove(reader.schema.get_field_index("customer_id"))
        with (
            pa.OSFile(str(directory / EVENTS_FILE), "wb") as sink,
            pa.ipc.new_file(sink, schema) as writer,
        ):
            for batch in reader:
                runs.add(batch.column("customer_id"), offset=rows)
                writer.write_batch(batch.drop_columns(["customer_id"]))
                rows += batch.num_rows
    finally:
        con.close()
    ids, starts, stops = runs.arrays(total=rows)
    np.save(directory / IDS_FILE, ids)
    np.save(directory / STARTS_FILE, starts)
    np.save(directory / STOPS_FILE, stops)
    return rows, len(ids)


class _Runs:
    """The runs of equal ids in the sorted id column, batch by batch (a run may span batches)."""

    def __init__(self) -> None:
        self.ids: list[pa.Array] = []
        self.starts: list[np.ndarray] = []
        self.last: str | None = None

    def add(self, ids: pa.Array, *, offset: int) -> None:
        if len(ids) == 0:
            return
        changed = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
        firsts = np.r_[0, np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1]
        if ids[0].as_py() == self.last:
            firsts = firsts[1:]  # the previous batch's last learner goes on
        self.ids.append(ids.take(pa.array(firsts, type=pa.int64())))
        self.starts.append(firsts + offset)
        self.last = ids[len(ids) - 1].as_py()

    def arrays(self, *, total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids as sorted fixed-width bytes, starts, stops)."""
        starts = np.concatenate(self.starts) if self.starts else np.empty(0, "int64")
        stops = np.r_[starts[1:], total].astype("int64") if len(starts) else starts
        ids = fixed_width(pa.chunked_array(self.ids, type=pa.string()))
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            order = np.argsort(ids, kind="stable")  # DuckDB's order is not numpy's bytes order
            ids, starts, stops = ids[order], starts[order], stops[order]
        return ids, starts.astype("int64"), stops


__all__ = ["FORMAT_VERSION", "EventIndex"]
