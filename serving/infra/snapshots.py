"""The batch job's feature snapshots: ``<data_dir>/features/as_of=YYYY-MM-DD.parquet``.

The daily batch writes the day's feature frame after committing the day; the service answers a
day from its snapshot, the report reads snapshots for the call list and for drift.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from features.atomic import replace_whole

if TYPE_CHECKING:
    import pandas as pd

FEATURES_SUBDIR = "features"
_SNAPSHOT_NAME = re.compile(r"^as_of=(\d{4}-\d{2}-\d{2})\.parquet$")
_PARTIAL_NAME = re.compile(r"^\.as_of=\d{4}-\d{2}-\d{2}\.parquet\.(\d+)\.[0-9a-f]+\.partial$")


def snapshot_path(data_dir: Path, as_of: date) -> Path:
    """``<data_dir>/features/as_of=YYYY-MM-DD.parquet``."""
    return Path(data_dir) / FEATURES_SUBDIR / f"as_of={as_of.isoformat()}.parquet"


def write_feature_snapshot(features: pd.DataFrame, data_dir: Path, as_of: date) -> Path:
    """Write a day's feature frame atomically: a reader never sees a half-written file.

    The frame goes to a temporary file named after this process (two runs of the same day never
    share one), then is renamed over the snapshot. Temporary files of processes that no longer
    run (a killed batch) are removed first; this one's is removed if the write fails.
    """
    target = snapshot_path(data_dir, as_of)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)
    replace_whole(target, lambda partial: features.to_parquet(partial, index=False))
    return target


def remove_stale_partials(directory: Path) -> list[Path]:
    """Remove the temporary snapshot files whose writing process is gone; return them."""
    removed = []
    for path in Path(directory).glob(".as_of=*.partial"):
        match = _PARTIAL_NAME.match(path.name)
        if match is None or not _running(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def batch_snapshots(data_dir: Path, until: date | None = None) -> list[tuple[date, Path]]:
    """Snapshots on or before ``until`` (all for None), oldest first."""
    directory = Path(data_dir) / FEATURES_SUBDIR
    if not directory.is_dir():
        return []
    dated = [
        (date.fromisoformat(match.group(1)), path)
        for path in directory.iterdir()
        if (match := _SNAPSHOT_NAME.match(path.name))
    ]
    return sorted((day, path) for day, path in dated if until is None or day <= until)


def latest_feature_snapshot(data_dir: Path) -> tuple[date, pd.DataFrame] | None:
    """The newest snapshot under ``data_dir``, validated.

    Returns:
        (its as_of, the feature frame), or None when no snapshot exists yet.
    """
    snapshots = batch_snapshots(data_dir)
    if not snapshots:
        return None
    # Imported here: features.windows brings DuckDB and pandera (~0.25 s), which the readers
    # of a snapshot's path or of one row (``lstep explain``) do not need.
    from features.windows import read_features

    as_of, path = snapshots[-1]
    return as_of, read_features(path)


__all__ = [
    "FEATURES_SUBDIR",
    "batch_snapshots",
    "latest_feature_snapshot",
    "remove_stale_partials",
    "snapshot_path",
    "write_feature_snapshot",
]
