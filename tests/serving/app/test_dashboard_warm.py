"""The warm hook of the service's dashboard cache (``warm_pages``): a started (or refreshing)
cache computes every page's unfiltered figures before it serves the frames, so that no viewer
pays a page's cold read; what it computed is what the request would have computed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import serving.app.dashboard_flow_pages as flow_pages
import serving.app.dashboard_pages as overview_pages
import serving.app.dashboard_selection as selection
import serving.app.dashboard_value_page as value_pages
from serving.app.dashboard import DashboardCache, Preparing
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_flow_pages import cohorts_page, flows_page
from serving.app.dashboard_pages import Links, overview_page
from serving.app.dashboard_value_page import value_page
from serving.app.dashboard_warm import warm_pages
from tests.serving.dashboard_helpers import DASHBOARD_NOW

LINKS = Links("/dashboard")
EVERYONE = DashboardFilters()
PAGES = {
    "overview": lambda cache: overview_page(cache, EVERYONE, LINKS),
    "cohorts": lambda cache: cohorts_page(cache, EVERYONE, LINKS),
    "flows": lambda cache: flows_page(cache, EVERYONE, LINKS),
    "value": lambda cache: value_page(cache, EVERYONE, LINKS),
}
COMPUTATIONS = {
    overview_pages: (
        "tag_series",
        "tag_spans",
        "with_learner",
        "kpi_trend",
        "value_of_rows",
        "value_by_tier_tag",
    ),
    selection: ("learners_of", "latest_tags", "behaviour_rows"),
    flow_pages: ("grid_of_weeks", "week_spans", "tag_flows", "moves_by_rule"),
    value_pages: ("learner_roi", "roi_of_learners", "spend_by_channel", "values_of"),
}
"""What the pages compute their figures with, by the module that calls it."""


def test_a_started_cache_serves_every_page_warmed_as_the_request_would_compute_it(
    dashboard, monkeypatch
):
    # Given the pages as a cache without warming computes them in the request
    _, synchronous = dashboard
    expected = {page: render(synchronous) for page, render in PAGES.items()}
    # and the service's cache, started (its first read and warming on a thread)
    view = SimpleNamespace(version="7", horizon_days=30, params={})  # no training window logged
    champions = SimpleNamespace(current=lambda: view)
    cache = DashboardCache(
        synchronous.source, lambda: DASHBOARD_NOW, background=True,
        warm=warm_pages(lambda: champions),
    )  # fmt: skip
    cache.start()
    with pytest.raises(Preparing):  # a page asked meanwhile is told so
        PAGES["overview"](cache)
    cache._refresh.join(timeout=600)
    # When every computation behind the pages fails from now on
    for module, names in COMPUTATIONS.items():
        for name in names:
            monkeypatch.setattr(module, name, _computed_in_the_request)
    # Then every page is served from what the warming computed, equal to the request's own
    for page, render in PAGES.items():
        assert render(cache) == expected[page], page
    # and the model page's figures for the champion were warmed too, kept for good
    frames = cache.frames()
    assert ("model-health", "7") in frames.kept
    assert frames.memo[("model-health", "7")][1]["note"].endswith("records no training window")


def test_a_filter_is_computed_in_the_request_beside_the_warmed_pages(dashboard):
    # Given the service's cache, started and warmed
    _, synchronous = dashboard
    cache = DashboardCache(
        synchronous.source, lambda: DASHBOARD_NOW, background=True, warm=warm_pages(None)
    )
    cache.start()
    cache._refresh.join(timeout=600)
    kept = set(cache.frames().kept)
    # When a filtered page is asked
    tier = DashboardFilters(tier="PT_001")
    html = value_page(cache, tier, LINKS)
    # Then it is computed and remembered, but not kept for good (the LRU may drop it)
    frames = cache.frames()
    assert ("campaigns", tier) in frames.memo and ("campaigns", tier) not in frames.kept
    assert frames.kept == kept and ("campaigns", EVERYONE) in kept
    assert html == value_page(synchronous, tier, LINKS)


def _computed_in_the_request(*_args, **_kwargs):
    raise AssertionError("computed in the request: the warming should have computed it")
