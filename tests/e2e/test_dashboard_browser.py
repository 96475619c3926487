"""The live dashboard in a real browser: Debian's headless Chromium driven by Playwright against
the dashboard app served on 127.0.0.1 over the e2e workspace (three batch days, the champion).

Every page is opened (overview, call list, a learner), two filters are applied through the form,
and every chart must have been drawn by the bundled plotly.js: an SVG with a trace's path in it.
Every request is intercepted: one that would leave 127.0.0.1 is aborted and fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.browser import offline_page, serving

NOW = datetime(2026, 6, 1, tzinfo=UTC)
"""The dashboard's clock: after every simulated event (the labels' read refuses later ones)."""
DRAWN = """divs => divs.map(div => ({
    id: div.id,
    svg: div.querySelectorAll(".main-svg").length,
    traces: [...div.querySelectorAll(".cartesianlayer .trace path")]
        .filter(path => (path.getAttribute("d") || "").length > 4).length,
}))"""
"""Per chart div: its plotly SVG layers and the trace paths drawn with a real outline."""
SELECTED = re.compile(r"(\d+) learner\(s\) selected")


@contextmanager
def served_dashboard(e2e_workspace, *, with_champions: bool = False) -> Iterator[str]:
    """The dashboard app mounted at /dashboard as the service mounts it, on 127.0.0.1 (its
    model page on the workspace's MLflow when ``with_champions``): the pages' base URL."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from serving.api.dashboard import MOUNT, dashboard_app
    from serving.app.dashboard import DashboardCache, DashboardSource
    from serving.app.dashboard_model_page import ChampionSource
    from tests.serving.fixtures import packaged_ruleset

    workspace, champion = e2e_workspace
    source = DashboardSource(
        store=workspace.store, customers_path=workspace.log.customers_path,
        events_path=workspace.log.events_path, data_dir=workspace.settings.data_path,
        ruleset=packaged_ruleset(champion),
    )  # fmt: skip
    cache = DashboardCache(source, lambda: NOW)
    extra = {}
    if with_champions:
        champions = ChampionSource(workspace.settings)
        extra["champions"] = lambda: champions
    app = dashboard_app(cache=lambda: cache, **extra)
    with serving(Starlette(routes=[Mount(MOUNT, app=app)])) as base:
        yield f"{base}{MOUNT}/"


@pytest.fixture(scope="module")
def dashboard_url(e2e_workspace):
    """The dashboard app mounted at /dashboard as the service mounts it, on 127.0.0.1."""
    with served_dashboard(e2e_workspace) as url:
        yield url


def _charts_drawn(page) -> list[dict]:
    """Wait for plotly.js to draw every chart div, then say what each holds."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('div.chart')]"
        ".every(div => div.querySelector('.main-svg'))"
    )
    return page.eval_on_selector_all("div.chart", DRAWN)


def _assert_every_chart_drawn(page, at_least: int) -> None:
    charts = _charts_drawn(page)
    assert len(charts) >= at_least, charts
    undrawn = [chart["id"] for chart in charts if not (chart["svg"] and chart["traces"])]
    assert not undrawn, f"charts without a drawn trace on {page.url}: {undrawn}"


def _selected(page) -> int:
    return int(SELECTED.search(page.locator("p.muted").first.inner_text()).group(1))


def test_the_dashboard_filters_draws_every_chart_and_reaches_a_learner_offline(
    dashboard_url, tmp_path
):
    with offline_page() as (page, left):
        # given the overview of everyone: the tag areas, six KPI trends and the value bars
        page.goto(dashboard_url, wait_until="load")
        _assert_every_chart_drawn(page, at_least=8)
        everyone = _selected(page)
        page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
        # when a lead narrows it to one tier and one tag through the form
        page.select_option("#filters select[name=tier]", "PT_001")
        page.select_option("#filters select[name=tag]", "ST_001")
        with page.expect_navigation(wait_until="load"):
            page.click("#filters button[type=submit]")
        # then the page is the filtered one, fewer learners, every chart drawn again
        query = parse_qs(urlsplit(page.url).query)
        assert (query["tier"], query["tag"]) == (["PT_001"], ["ST_001"])
        assert page.locator("#filters select[name=tier]").input_value() == "PT_001"
        assert 0 < _selected(page) < everyone
        _assert_every_chart_drawn(page, at_least=8)
        page.screenshot(path=str(tmp_path / "overview-filtered.png"), full_page=True)
        # when the lead opens the call list and follows its first learner's link
        page.click("#nav-calls")
        page.wait_for_load_state("load")
        first = page.locator("a.learner-link").first
        customer_id = first.inner_text()
        page.screenshot(path=str(tmp_path / "calls.png"), full_page=True)
        with page.expect_navigation(wait_until="load"):
            first.click()
        # then it is that learner's page, with the tag history drawn
        assert urlsplit(page.url).path.endswith(f"/learner/{customer_id}")
        assert customer_id in page.locator("h1").inner_text()
        _assert_every_chart_drawn(page, at_least=1)
        page.screenshot(path=str(tmp_path / "learner.png"), full_page=True)
    # and nothing was asked of any host but 127.0.0.1
    assert left == []
    shots = ("overview.png", "overview-filtered.png", "calls.png", "learner.png")
    assert all((tmp_path / name).stat().st_size > 10_000 for name in shots)
