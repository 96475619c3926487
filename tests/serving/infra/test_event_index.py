"""The event index: a learner's events by id from the sorted, memory-mapped sidecar."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from features.online_inputs import events_by_learner
from serving.infra import event_index
from serving.infra.event_index import EventIndex
from serving.infra.sidecars import META_FILE
from tests.features.event_frames import events_frame


def small_log() -> pd.DataFrame:
    """Three learners' events out of order, with nulls, an unknown-to-numpy id and ties."""
    return events_frame(
        [
            ["B", "2024-03-05 10:00:00", "session", 600.0, "mobile", None],
            ["A", "2024-03-02 09:00:00", "feature_used", None, "web", "search"],
            ["Zoë-1", "2024-03-01 00:00:00", "quiz_passed", None, None, None],
            ["B", "2024-03-01 08:00:00", "video_watched", 120.0, "api", "v1"],
            ["A", "2024-03-01 09:00:00", "other", None, None, None],
            ["B", "2024-03-05 10:00:00", "session", 600.0, "mobile", None],
        ]
    )


def assert_same_events(left, right) -> None:
    np.testing.assert_array_equal(left.ts_us, right.ts_us)
    np.testing.assert_array_equal(left.type_code, right.type_code)
    np.testing.assert_array_equal(left.duration_s, right.duration_s)  # NaN == NaN here
    np.testing.assert_array_equal(left.channel_code, right.channel_code)
    assert left.item.tolist() == right.item.tolist()


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "events.parquet"
    small_log().to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("batch_rows", [1, 2, 1_000_000])
def test_each_learners_events_come_back_sorted_and_whole(
    log_path, tmp_path, monkeypatch, batch_rows
):
    # given a log indexed in batches of any size (a learner's rows may span batches)
    monkeypatch.setattr(event_index, "BATCH_ROWS", batch_rows)
    index = EventIndex.open(log_path, tmp_path / "index")
    # when each learner's events are read by id
    expected = events_by_learner(small_log())
    # then they are the learner's events of the log, in time order, duplicates kept
    assert len(index) == 3
    for customer_id, events in expected.items():
        assert_same_events(index.events_of(customer_id), events)
    assert len(index.events_of("B")) == 3


def test_an_id_the_log_does_not_hold_has_no_events(log_path, tmp_path):
    index = EventIndex.open(log_path, tmp_path / "index")
    for unknown in ("", "AA", "C", "a-much-longer-id-than-any-in-the-log"):
        assert len(index.events_of(unknown)) == 0


def test_the_index_is_reused_until_the_log_changes(log_path, tmp_path):
    # given an index built once
    first = EventIndex.open(log_path, tmp_path / "index")
    built_at = (first.directory / META_FILE).stat().st_mtime_ns
    # when the same log is opened again, then the sidecar is reused as it is
    again = EventIndex.open(log_path, tmp_path / "index")
    assert again.directory == first.directory
    assert (again.directory / META_FILE).stat().st_mtime_ns == built_at
    # when the log gets a new version, then a new sidecar replaces the old one
    events_frame([["C", "2024-03-03 10:00:00", "session"]]).to_parquet(log_path, index=False)
    os.utime(log_path, ns=(built_at + 10**9, built_at + 10**9))
    fresh = EventIndex.open(log_path, tmp_path / "index")
    assert fresh.directory != first.directory and not first.directory.exists()
    assert len(fresh.events_of("C")) == 1 and len(fresh.events_of("A")) == 0


def test_an_unfinished_build_is_never_read(log_path, tmp_path):
    # given a sidecar directory whose build stopped before its meta.json
    index = EventIndex.open(log_path, tmp_path / "index")
    (index.directory / META_FILE).unlink()
    (index.directory / event_index.EVENTS_FILE).write_bytes(b"torn")
    # when opened, then it is rebuilt rather than read
    rebuilt = EventIndex.open(log_path, tmp_path / "index")
    assert len(rebuilt.events_of("A")) == 2
