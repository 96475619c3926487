"""The dashboard cache's background refresh: a moved history is read on a thread while the
previous frames are served, then the new ones; a refresh's error reaches the next request. A
started cache reads its first frames on a thread too, answering "preparing" meanwhile; the
frames' memo keeps the recently used figures and every warmed one."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pandas as pd
import pytest

import serving.app.dashboard as dashboard
from serving.app.dashboard import (
    MEMO_LIMIT,
    DashboardCache,
    DashboardFrames,
    Preparing,
    ReadFailed,
)


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


def _started(tmp_path, learners: int | None) -> tuple[DashboardCache, MovingStore]:
    """A background cache over a customers file of ``learners`` rows (None: no file)."""
    customers = tmp_path / "customers.parquet"
    if learners is not None:
        pd.DataFrame({"customer_id": [f"C{i}" for i in range(learners)]}).to_parquet(customers)
    store = MovingStore()
    source = SimpleNamespace(store=store, customers_path=customers)
    clock = lambda: datetime(2026, 6, 1, tzinfo=UTC)  # noqa: E731
    return DashboardCache(source, clock, background=True), store


def test_a_started_cache_answers_preparing_at_once_until_its_first_read_is_done(reads, tmp_path):
    # Given a cache started at the service's start-up, its first read not done
    cache, _ = _started(tmp_path, learners=3)
    cache.start()
    # When pages ask for the frames meanwhile
    began = time.monotonic()
    for _ in range(2):
        with pytest.raises(Preparing, match="3 learners' history being read") as raised:
            cache.frames()
    # Then each is told at once, with the learners being read; one read runs, not one each
    assert time.monotonic() - began < 1.0 and raised.value.learners == 3 and cache.refreshing
    _open(reads, (1,))
    cache._refresh.join(timeout=10)
    assert cache.frames().key == (1,) and reads.done == [(1,)]


def test_a_started_first_read_that_fails_says_why_once_then_prepares_again(reads, tmp_path):
    # Given a started cache whose first read fails (the store does not answer)
    cache, _ = _started(tmp_path, learners=None)
    reads.failures[(1,)] = OSError("state.db: database is locked")
    _open(reads, (1,))
    cache.start()
    cache._refresh.join(timeout=10)
    # When the next request comes / Then it is told why, in one line naming the store's error
    with pytest.raises(ReadFailed, match=r"could not read the stored history: state\.db: database"):
        cache.frames()
    # And the one after starts the read again and is told the dashboard is being prepared
    del reads.failures[(1,)]
    with pytest.raises(Preparing, match="the learners' history being read"):
        cache.frames()
    cache._refresh.join(timeout=10)
    assert cache.frames().key == (1,) and reads.done == [(1,), (1,)]


def test_a_warm_hook_that_fails_is_logged_and_the_frames_are_served(monkeypatch, caplog):
    # Given a refresh whose warm hook fails on one page
    monkeypatch.setattr(dashboard, "read_frames", lambda _s, key: _frames(key, [date(2026, 5, 1)]))
    monkeypatch.setattr(DashboardCache, "_load_history", lambda self, frames: None)
    cache, store = _cache(background=True)

    def warm(_cache, frames):
        frames.remembered("overview", lambda: "drawn")
        raise ValueError("campaigns.yaml: no cost for channel fax")

    cache.warm = warm
    cache.frames()
    store.head = (2,)
    cache.frames()
    cache._refresh.join(timeout=10)
    # Then the new frames are served with what was warmed, and the failure is in the log
    served = cache.frames()
    assert served.key == (2,) and served.memo["overview"] == "drawn"
    assert "warming the dashboard's pages failed" in caplog.text and "fax" in caplog.text


def test_the_memo_keeps_the_recently_used_entries_and_every_warmed_one():
    # Given frames with a warmed entry and MEMO_LIMIT filtered ones, the first used again
    frames, computed = _frames((1,)), []

    def remember(key):
        return frames.remembered(key, lambda: computed.append(key) or key)

    with frames.keeping():
        remember("everyone")
    for index in range(MEMO_LIMIT):
        remember(("filter", index))
    remember(("filter", 0))
    # When one more filter is seen
    remember(("filter", MEMO_LIMIT))
    # Then the least recently used filter is dropped, never the warmed entry
    assert len(frames.memo) == MEMO_LIMIT + 1
    assert "everyone" in frames.memo and ("filter", 0) in frames.memo
    assert ("filter", 1) not in frames.memo
    # And a dropped entry is computed again when asked; a kept one is not
    remember(("filter", 1))
    remember("everyone")
    assert computed.count(("filter", 1)) == 2 and computed.count("everyone") == 1
    assert computed.count(("filter", 0)) == 1
