"""The dashboard app while its first read runs: its start-up starts a background cache, a page
asked before the frames are ready is a 503 at once that says so and reloads itself, and a read
that fails is one line naming why; a cache without background is read in the request."""

from __future__ import annotations

import html
import threading
import time
import warnings
from datetime import UTC, datetime
from types import SimpleNamespace

import pandas as pd
import pytest

import serving.app.dashboard as dashboard
from serving.api.dashboard import PREPARING_RELOAD_S, dashboard_app
from serving.app.dashboard import DashboardCache, DashboardFrames

CLOCK = lambda: datetime(2026, 6, 1, tzinfo=UTC)  # noqa: E731


class Store:
    def audit_head(self) -> tuple[int]:
        return (1,)


@pytest.fixture
def gated(monkeypatch):
    """read_frames replaced: it waits for the gate, then fails with ``failure`` or gives frames
    without a batch day (so that a ready page is the 404 saying so)."""
    state = SimpleNamespace(gate=threading.Event(), failure=None, reads=0)

    def read(_source, key):
        state.gate.wait(timeout=10)
        state.reads += 1
        if state.failure is not None:
            raise state.failure
        empty = pd.DataFrame()
        return DashboardFrames(key=key, days=[], transitions=empty, customers=empty,
                               latest_scores=empty)  # fmt: skip

    monkeypatch.setattr(dashboard, "read_frames", read)
    return state


def _client(app):
    """Starlette's TestClient, which runs the app's lifespan as BentoML does (it warns on import
    that it will move to another httpx package; the one it has works)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app)


def _cache(tmp_path, *, background: bool) -> DashboardCache:
    customers = tmp_path / "customers.parquet"
    pd.DataFrame({"customer_id": ["A", "B"]}).to_parquet(customers)
    source = SimpleNamespace(store=Store(), customers_path=customers)
    return DashboardCache(source, CLOCK, background=background)


def test_a_page_asked_while_the_dashboard_is_prepared_is_a_503_that_reloads_itself(gated, tmp_path):
    cache = _cache(tmp_path, background=True)
    # Given the app started (its lifespan starts the cache's first read), the read not done
    with _client(dashboard_app(cache=lambda: cache)) as client:
        began = time.monotonic()
        answers = [client.get(page) for page in ("/", "/calls", "/cohorts", "/value", "/model")]
        # Then every page answers at once: 503, when to retry, and a page that reloads itself
        assert time.monotonic() - began < 1.0
        for answer in answers:
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == str(PREPARING_RELOAD_S)
            assert f'<meta http-equiv="refresh" content="{PREPARING_RELOAD_S}">' in answer.text
            said = html.unescape(answer.text)
            assert "preparing the dashboard: 2 learners' history being read" in said
        # And bad input is still refused at once, naming it
        bad = client.get("/", params={"tier": "PT_042"})
        assert bad.status_code == 400 and "PT_042" in bad.text
        # When the read is done, the pages answer from the frames (no batch day here: a 404)
        gated.gate.set()
        cache._refresh.join(timeout=10)
        ready = client.get("/")
        assert ready.status_code == 404 and "no completed batch run yet" in ready.text
        assert gated.reads == 1


def test_a_first_read_that_fails_is_one_line_naming_why(gated, tmp_path):
    cache = _cache(tmp_path, background=True)
    gated.failure = OSError("could not connect to server: Connection refused")
    gated.gate.set()
    with _client(dashboard_app(cache=lambda: cache)) as client:
        cache._refresh.join(timeout=10)
        failed = client.get("/flows")
        assert failed.status_code == 503 and "Connection refused" in failed.text
        assert "could not read the stored history" in failed.text
        assert failed.text.count("<p") == 1  # one line
        # and the next request reads again (the store back), told it is being prepared
        gated.failure = None
        assert "preparing the dashboard" in client.get("/flows").text


def test_a_cache_without_background_is_not_started_and_reads_in_the_request(gated, tmp_path):
    cache = _cache(tmp_path, background=False)
    gated.gate.set()
    with _client(dashboard_app(cache=lambda: cache)) as client:
        assert cache._refresh is None  # nothing started at start-up
        answer = client.get("/")
        assert answer.status_code == 404 and gated.reads == 1
