"""Batch-day feature snapshots on disk."""

from __future__ import annotations

from datetime import date

from serving.infra.snapshots import batch_snapshots


def test_batch_snapshots_lists_days_up_to_the_report_day(tmp_path):
    # given snapshots on three days
    directory = tmp_path / "features"
    directory.mkdir()
    for day in ("2026-05-01", "2026-05-08", "2026-05-15"):
        (directory / f"as_of={day}.parquet").write_bytes(b"")
    # when listed until the second day, then the third is not used
    days = [day for day, _ in batch_snapshots(tmp_path, date(2026, 5, 8))]
    assert days == [date(2026, 5, 1), date(2026, 5, 8)]
