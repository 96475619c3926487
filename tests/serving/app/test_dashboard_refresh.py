"""The dashboard cache's background refresh: a moved history is read on a thread while the
previous frames are served, then the new ones; a refresh's error reaches the next request."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pandas as pd
import pytest

import serving.app.dashboard as dashboard
from serving.app.dashboard import DashboardCache, DashboardFrames


class MovingStore:
    """A store whose history head the test moves."""

    def __init__(self) -> None:
        self.head = (1,)

    def audit_head(self) -> tuple[int]:
        return self.head


def _frames(key, days=()) -> DashboardFrames:
    empty = pd.DataFrame()
    return DashboardFrames(key=key, days=list(days), transitions=empty, customers=empty,
                           latest_scores=empty)  # fmt: skip


@pytest.fixture
def reads(monkeypatch):
    """read_frames replaced: each read waits for its key's gate, then gives that key's frames
    (or raises what ``failures`` holds for it)."""
    gates: dict[tuple, threading.Event] = {}
    failures: dict[tuple, Exception] = {}
    done: list[tuple] = []

    def read(_source, key):
        gates.setdefault(key, threading.Event()).wait(timeout=10)
        done.append(key)
        if key in failures:
            raise failures[key]
        return _frames(key)

    monkeypatch.setattr(dashboard, "read_frames", read)
    return SimpleNamespace(gates=gates, failures=failures, done=done)


def _cache(background: bool) -> tuple[DashboardCache, MovingStore]:
    store = MovingStore()
    source = SimpleNamespace(store=store)
    return DashboardCache(
        source, lambda: datetime(2026, 6, 1, tzinfo=UTC), background=background
    ), store


def _open(reads, key):
    reads.gates.setdefault(key, threading.Event()).set()


def test_a_moved_history_is_served_from_the_previous_frames_until_the_new_are_read(reads):
    # Given a background cache that read the history at head 1
    cache, store = _cache(background=True)
    _open(reads, (1,))
    first = cache.frames()
    assert first.key == (1,) and not cache.refreshing
    # When the history moves (a batch day) and a request comes while head 2 is being read
    store.head = (2,)
    during = cache.frames()
    # Then that request is served the previous frames at once, and the cache says it refreshes
    assert during is first and cache.refreshing
    assert cache.frames() is first  # a second request starts no second read
    # And once the read is done, the next request gets the new frames
    _open(reads, (2,))
    cache._refresh.join(timeout=10)
    assert cache.frames().key == (2,) and not cache.refreshing
    assert reads.done == [(1,), (2,)]


def test_the_first_request_waits_and_a_cache_without_background_reads_in_the_request(reads):
    # Given no frames yet: the first request reads them itself, even with background
    cache, _ = _cache(background=True)
    _open(reads, (1,))
    _open(reads, (2,))
    assert cache.frames().key == (1,)
    # Given a cache without background: a moved history is read by the request that finds it
    plain, plain_store = _cache(background=False)
    assert plain.frames().key == (1,)
    plain_store.head = (2,)
    assert plain.frames().key == (2,) and not plain.refreshing


def test_a_refresh_that_fails_raises_its_error_to_the_next_request_then_retries(reads):
    # Given a background cache at head 1, and the read of head 2 failing
    cache, store = _cache(background=True)
    _open(reads, (1,))
    cache.frames()
    store.head = (2,)
    reads.failures[(2,)] = ValueError("customers.parquet: product_tag has PT_009")
    _open(reads, (2,))
    cache.frames()
    cache._refresh.join(timeout=10)
    # When the next request comes / Then it gets the refresh's error, naming what was wrong
    with pytest.raises(ValueError, match="PT_009"):
        cache.frames()
    # And the one after tries again (the problem fixed): a new read of head 2
    del reads.failures[(2,)]
    cache.frames()
    cache._refresh.join(timeout=10)
    assert cache.frames().key == (2,)


def test_a_refresh_finds_the_kpis_history_and_warms_the_pages_before_serving_them(
    reads, monkeypatch
):
    # Given frames with a batch day: the refresh also finds their KPIs' history and computes
    # what the warm hook asks (the service's: the unfiltered overview), so that no viewer pays it
    found, warmed = [], []
    monkeypatch.setattr(
        DashboardCache, "_load_history", lambda self, frames: found.append(frames.key)
    )
    monkeypatch.setattr(dashboard, "read_frames", lambda _s, key: _frames(key, [date(2026, 5, 1)]))
    cache, store = _cache(background=True)
    cache.warm = lambda _cache, frames: warmed.append((frames.key, cache.frames().key))
    cache.frames()
    store.head = (2,)
    cache.frames()
    cache._refresh.join(timeout=10)
    # Then both ran on the new frames while the previous ones were still served
    assert found == [(2,)] and warmed == [((2,), (1,))]
    assert cache.frames().key == (2,)
