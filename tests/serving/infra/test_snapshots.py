"""Batch-day feature snapshots on disk."""

from __future__ import annotations

import os
from datetime import date

import pandas as pd

from serving.infra.snapshots import batch_snapshots, snapshot_path, write_feature_snapshot


def test_batch_snapshots_lists_days_up_to_the_report_day(tmp_path):
    # given snapshots on three days
    directory = tmp_path / "features"
    directory.mkdir()
    for day in ("2026-05-01", "2026-05-08", "2026-05-15"):
        (directory / f"as_of={day}.parquet").write_bytes(b"")
    # when listed until the second day, then the third is not used
    days = [day for day, _ in batch_snapshots(tmp_path, date(2026, 5, 8))]
    assert days == [date(2026, 5, 1), date(2026, 5, 8)]


def test_a_snapshot_write_leaves_no_temporary_file_and_removes_dead_ones(tmp_path):
    # given a temporary file of a batch process that was killed, and one of a live process
    directory = tmp_path / "features"
    directory.mkdir()
    dead = directory / ".as_of=2026-05-01.parquet.999999999.0badc0de.partial"
    live = directory / f".as_of=2026-05-01.parquet.{os.getpid()}.0badc0de.partial"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    # when a day's snapshot is written
    frame = pd.DataFrame({"customer_id": ["a"], "as_of": [pd.Timestamp(date(2026, 5, 2))]})
    written = write_feature_snapshot(frame, tmp_path, date(2026, 5, 2))
    # then it is in place, its own temporary file is gone, and so is the dead process's
    assert written == snapshot_path(tmp_path, date(2026, 5, 2)) and written.exists()
    assert sorted(path.name for path in directory.iterdir()) == sorted([written.name, live.name])
