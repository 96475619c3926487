"""A day's stored scores as parquet: ``<scores_dir>/as_of=YYYY-MM-DD/<run_id>.parquet``.

A day's scores are one row per learner (a million at scale); SQL inserts of them cost most of the
batch's write (issue 14), so a store opened with a scores directory (``StateStore(url,
scores_dir=...)``, which ``StateStore.from_settings`` and the apps do with
``<data_dir>/scores``) keeps them here and the SQL store keeps state, transitions, overrides, the
outbox and the runs.

How a day stays all-or-nothing with a file outside the SQL transaction:

- **The run id names the file.** ``apply_day`` writes ``<run_id>.parquet`` (a temporary name,
  then ``os.replace``) before the day's SQL transaction, and readers read, for each day, only the
  file of the run ``batch_runs`` records as completed: the file of a run that never committed is
  invisible, and a replace that fails leaves the replaced run's file, still the completed one.
- **Files are removed by name, never by listing.** After the commit the replaced run's file (and
  this run's, when it lost to another process) is removed, best effort: a leftover is invisible
  and harmless, while sweeping "every other file of the day" could delete the file of a replace
  that is waiting for the writer lock and about to commit.
- **Rows are sorted by customer_id** in row groups of ``ROW_GROUP_ROWS``: one learner's row
  (``latest_score``) is read from the one row group whose statistics hold its id.

Migration: stores that kept scores in SQL before keep them there. A reader takes, for each
completed day, the run's file when it exists and the day's SQL rows otherwise (a simple union:
nothing is exported, nothing rewritten, and replacing such a day deletes its SQL rows as before).
A completed day whose run recorded scores but has neither a file nor SQL rows is an error naming
the missing file, never a day silently without scores.

This module is the file half; the union with SQL is ``serving.infra.store_reads``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.atomic import replace_whole
from serving.core.problems import Unavailable

SCORES_SUBDIR = "scores"
"""The scores directory under a workspace's data directory."""
ROW_GROUP_ROWS = 16_000
"""Rows per row group: one learner's read decodes one group (at a million rows 16k rows read
in ~5 ms, 64k in ~25; the full read and the file size barely change)."""
SCORES_ARROW_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("as_of", pa.date32()),
        ("p_churn", pa.float64()),
        ("p_low", pa.float64()),
        ("p_high", pa.float64()),
        ("confidence", pa.float64()),
        ("priority", pa.string()),
        ("action", pa.string()),
        ("control", pa.bool_()),
        ("value_at_risk", pa.float64()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        ("campaign_id", pa.string()),
        ("channel", pa.string()),
        ("behaviour_tags", pa.string()),
        ("expected_months", pa.float64()),
        ("projected_value", pa.float64()),
    ]
)
"""The file's columns: ``STORED_SCORES_SCHEMA``'s, in its order (a test holds them equal)."""


def score_file(scores_dir: Path, as_of: date, run_id: str) -> Path:
    """``<scores_dir>/as_of=YYYY-MM-DD/<run_id>.parquet`` (the run id percent-encoded)."""
    name = quote(run_id, safe="-_")  # a run id is free text: never a path separator
    return Path(scores_dir) / f"as_of={as_of.isoformat()}" / f"{name}.parquet"


def scores_table(rows: pd.DataFrame) -> pa.Table:
    """A day's score rows (``serving.core.planning.score_rows``) as the file's table, by id."""
    from rules.codes import text_order  # kept off this module's import: rules loads pandera

    table = pa.Table.from_pandas(rows, schema=SCORES_ARROW_SCHEMA, preserve_index=False)
    # ids of up to eight bytes ordered by their byte keys: a million in ~0.03 s against ~0.2 s
    order = text_order(table.column("customer_id"))
    return table.sort_by("customer_id") if order is None else table.take(order)


def write_scores(scores_dir: Path, as_of: date, run_id: str, rows: pd.DataFrame) -> Path:
    """Write a run's scores of ``as_of`` atomically and return the file.

    Raises:
        Unavailable: the directory cannot be created or written (one line naming it).
    """
    table = scores_table(rows)
    target = score_file(scores_dir, as_of, run_id)
    with _file_errors(scores_dir):
        replace_whole(
            target, lambda partial: pq.write_table(table, partial, row_group_size=ROW_GROUP_ROWS)
        )
    return target


def remove_files(paths: Iterable[Path]) -> None:
    """Remove files that no reader can see any more, best effort (a leftover is harmless)."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            continue


def read_scores(
    paths: Sequence[Path],
    columns: Sequence[str] | None = None,
    learners: Sequence[pa.Array] | None = None,
) -> pd.DataFrame:
    """The rows of ``paths`` in their order (only ``columns`` when given), dates as
    ``datetime64[us]`` like every frame of the store.

    Args:
        paths: the days' files.
        columns: the columns to read (None: all).
        learners: per path, the ids whose rows to keep (None: every row of every file).

    Raises:
        Unavailable: a file cannot be read.
    """
    names = list(SCORES_ARROW_SCHEMA.names) if columns is None else list(columns)
    kept = [None] * len(paths) if learners is None else list(learners)
    tables = []
    for path, ids in zip(paths, kept, strict=True):
        rows = None if ids is None else pc.field("customer_id").isin(ids)
        with _file_errors(_scores_dir_of(path)):
            tables.append(
                pq.read_table(path, columns=names, schema=SCORES_ARROW_SCHEMA, filters=rows)
            )
    if not tables:
        tables = [SCORES_ARROW_SCHEMA.empty_table().select(names)]
    frame = pa.concat_tables(tables).to_pandas(date_as_object=False)
    if "as_of" in frame:
        frame["as_of"] = frame["as_of"].astype("datetime64[us]")
    return frame


def learner_row(path: Path, customer_id: str) -> dict[str, Any] | None:
    """One learner's row of a day's file: only the row groups whose customer_id statistics can
    hold the id are read (pyarrow's filtered read costs ~15 ms at a million rows, this ~5)."""
    with _file_errors(_scores_dir_of(path)):
        file = pq.ParquetFile(path)
        column = file.schema_arrow.get_field_index("customer_id")
        for index in range(file.metadata.num_row_groups):
            stats = file.metadata.row_group(index).column(column).statistics
            if (
                stats is not None
                and stats.has_min_max
                and not stats.min <= customer_id <= stats.max
            ):
                continue
            group = file.read_row_group(index)
            found = group.filter(pc.equal(group["customer_id"], customer_id))
            if found.num_rows:
                return found.slice(0, 1).to_pylist()[0]
    return None


def _scores_dir_of(path: Path) -> Path:
    """The scores directory of a day's file (``<scores_dir>/as_of=D/<run>.parquet``)."""
    return Path(path).parent.parent


@contextmanager
def _file_errors(scores_dir: Path) -> Iterator[None]:
    """An unreadable, unwritable, vanished or corrupt scores file is one ``Unavailable`` line."""
    try:
        yield
    except (OSError, pa.ArrowException) as error:  # pyarrow's I/O errors are OSErrors too
        strerror = getattr(error, "strerror", None)
        reason = (strerror or str(error) or type(error).__name__).strip().splitlines()[0]
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        raise Unavailable(f"scores directory {scores_dir}: {reason}{where}") from None


__all__ = [
    "ROW_GROUP_ROWS",
    "SCORES_ARROW_SCHEMA",
    "SCORES_SUBDIR",
    "learner_row",
    "read_scores",
    "remove_files",
    "score_file",
    "scores_table",
    "write_scores",
]
