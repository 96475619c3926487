"""The simulated population written as parquet files: ``simulate``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.layout import CUSTOMERS_FILE, EVENTS_FILE
from features.simulator.chunk import simulate_chunk
from features.simulator.config import (
    CHUNK_SIZE,
    CUSTOMERS_SCHEMA,
    EVENTS_SCHEMA,
    META_FILE,
    TRUTH_FILE,
    TRUTH_SCHEMA,
    SimulationConfig,
    SimulationSummary,
)
from features.simulator.state import ChunkResult


@contextmanager
def _parquet_writers(out_dir: Path) -> Iterator[dict[str, pq.ParquetWriter]]:
    """One writer per output file, writing to a temporary name renamed only when all went well."""
    schemas = {
        EVENTS_FILE: EVENTS_SCHEMA,
        CUSTOMERS_FILE: CUSTOMERS_SCHEMA,
        TRUTH_FILE: TRUTH_SCHEMA,
    }
    partial = {name: out_dir / f".{name}.partial" for name in schemas}
    writers = {name: pq.ParquetWriter(partial[name], schema) for name, schema in schemas.items()}
    try:
        yield writers
    except BaseException:
        for name, writer in writers.items():
            writer.close()
            partial[name].unlink(missing_ok=True)
        raise
    for name, writer in writers.items():
        writer.close()
        partial[name].replace(out_dir / name)


def simulate(
    config: SimulationConfig,
    out_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> SimulationSummary:
    """Simulate ``config.customers`` learners and write the three parquet files and meta.json.

    Args:
        config: population size, period, seed and truth sampling.
        out_dir: directory for the files (created if missing; existing outputs are replaced).
        progress: called with the number of learners just finished, after each chunk.

    Returns:
        Counts, the period and the files written.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunk_count = -(-config.customers // CHUNK_SIZE)
    events = truth_rows = 0
    with _parquet_writers(out_dir) as writers:
        for index, seed in enumerate(np.random.SeedSequence(config.seed).spawn(chunk_count)):
            first = index * CHUNK_SIZE
            size = min(CHUNK_SIZE, config.customers - first)
            chunk = simulate_chunk(config, seed, first, size)
            for name, table in _tables(chunk).items():
                if table.num_rows:  # no empty row groups: an empty file still has the schema
                    writers[name].write_table(table, row_group_size=table.num_rows)
            events += chunk.events.num_rows
            truth_rows += chunk.truth.num_rows
            if progress is not None:
                progress(size)
    _write_meta(out_dir, config, events=events, truth_rows=truth_rows)
    return SimulationSummary(
        customers=config.customers,
        events=events,
        truth_rows=truth_rows,
        start=config.start,
        end=config.end,
        files=tuple(
            out_dir / name for name in (EVENTS_FILE, CUSTOMERS_FILE, TRUTH_FILE, META_FILE)
        ),
        seconds=time.perf_counter() - started,
    )


def _write_meta(out_dir: Path, config: SimulationConfig, *, events: int, truth_rows: int) -> None:
    """meta.json: the config, the end of the log (data_end) and the row counts; no timings, so
    that the same config gives the same bytes."""
    meta = {
        "config": config.model_dump(mode="json"),
        "data_end": config.end.isoformat(),
        "customers": config.customers,
        "events": events,
        "truth_rows": truth_rows,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _tables(chunk: ChunkResult) -> dict[str, pa.Table]:
    return {EVENTS_FILE: chunk.events, CUSTOMERS_FILE: chunk.customers, TRUTH_FILE: chunk.truth}
