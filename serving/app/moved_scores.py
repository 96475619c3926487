"""The KPIs' scores of each day's moved learners, read from a day's scores file once and kept.

The KPIs read a score on its move's day: of every completed day, the KPIs' columns
(``kpis.SCORE_COLUMNS``) of the learners with a transition on it. Filtering a day's scores file
by those learners still decodes the file's id column, so reading them anew for every KPI day
grew with days x learners (~0.1 s a stored day at a million learners).

``moved_scores`` keeps each day's rows in ``<data_dir>/kpis/scores/as_of=DAY.parquet`` with the
key they were read under: the day's completed run (a replaced day is another run, its scores
another file), and the count and the last id of the day's transitions in the audit log (an
override recorded on the day adds one). A file whose key differs, or that cannot be read, is
read again from the store; one that cannot be written costs only speed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from serving.app.kpi_files import KPIS_SUBDIR
from serving.infra.keyed_files import read_keyed, write_keyed
from serving.infra.store import StateStore
from serving.infra.store_reads import day_learners

SCORES_SUBDIR = "scores"
LAYOUT = 1
KEY_METADATA = b"lstep.moved_scores"
"""The schema metadata entry holding a file's key."""


def moved_scores(
    store: StateStore,
    data_dir: Path,
    transitions: pd.DataFrame,
    days: Sequence[tuple[date, str]],
    columns: Sequence[str],
) -> pd.DataFrame:
    """``store.scores_frame(columns=columns, learners=day_learners(transitions))`` of ``days``,
    each day's rows read from its kept file while its key holds.

    Args:
        store: the state store.
        data_dir: the data directory (the files are kept under its ``kpis/scores``).
        transitions: the audit log (``id``, ``customer_id``, ``as_of``), up to the last day.
        days: the completed days and their runs' ids.
        columns: the scores' columns to read (``customer_id`` and ``as_of`` among them).
    """
    learners = functools.cache(lambda: day_learners(transitions))  # only for a day read anew
    stamps = _day_stamps(transitions)
    frames = []
    for day, run_id in sorted(days):
        key = f"{LAYOUT}|{run_id}|{stamps.get(day, (0, 0))}|{','.join(columns)}"
        path = Path(data_dir) / KPIS_SUBDIR / SCORES_SUBDIR / f"as_of={day.isoformat()}.parquet"
        kept = read_keyed(path, KEY_METADATA, key)
        if kept is None:
            frame = store.scores_frame(day, columns=list(columns), learners=learners())
            write_keyed(path, pa.Table.from_pandas(frame, preserve_index=False), KEY_METADATA, key)
        else:
            frame = kept.to_pandas()
        frames.append(frame)
    if not frames:
        return store.scores_frame(columns=list(columns), learners=learners())
    return pd.concat(frames, ignore_index=True)


def _day_stamps(transitions: pd.DataFrame) -> dict[date, tuple[int, int]]:
    """Per day: the count and the last id of its transitions."""
    days = pd.to_datetime(transitions["as_of"]).to_numpy("datetime64[D]")
    stamps = pd.Series(transitions["id"].to_numpy()).groupby(days).agg(["size", "max"])
    return {
        day.date(): (int(count), int(last))
        for day, count, last in zip(stamps.index, stamps["size"], stamps["max"], strict=True)
    }


__all__ = ["moved_scores"]
