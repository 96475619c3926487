"""The dashboard's cohort and flow pages in a real browser: Debian's headless Chromium driven by
Playwright against the dashboard app on 127.0.0.1 over the e2e workspace (three batch days).

The retention heatmap must have been drawn by the bundled plotly.js (its cells painted into the
heatmap's image) and the Sankey's links and nodes drawn as SVG paths and rects; filters are applied
through the pages' forms; any request off 127.0.0.1 is aborted and fails the test.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from tests.e2e.browser import offline_page
from tests.e2e.test_dashboard_browser import dashboard_url  # noqa: F401 (the served app)

DRAWN = """div => ({
    svg: div.querySelectorAll(".main-svg").length,
    cells: [...div.querySelectorAll(".hm image")]
        .filter(image => (image.getAttribute("href") || "").length > 100).length,
    links: [...div.querySelectorAll(".sankey-link")]
        .filter(path => (path.getAttribute("d") || "").length > 4).length,
    nodes: [...div.querySelectorAll(".sankey-node rect")]
        .filter(rect => Number(rect.getAttribute("height")) > 0).length,
})"""
"""What plotly.js drew in a chart div: the heatmap's painted image, the Sankey's links and nodes."""
SELECTED = re.compile(r"(\d+) learner\(s\) selected")
MOVES = re.compile(r"(\d+) move\(s\)")


def _drawn(page, chart_id: str) -> dict:
    page.wait_for_selector(f"#{chart_id} .main-svg")
    return page.eval_on_selector(f"#{chart_id}", DRAWN)


def _count(page, pattern: re.Pattern) -> int:
    return int(pattern.search(page.locator("p.muted").first.inner_text()).group(1))


def _submit(page) -> None:
    with page.expect_navigation(wait_until="load"):
        page.click("#filters button[type=submit]")


def _cohorts(page, tmp_path) -> None:
    """The grid of everyone, then of one tier: a heatmap drawn each time, fewer learners."""
    page.click("#nav-cohorts")
    page.wait_for_load_state("load")
    assert _drawn(page, "retention-chart")["cells"] == 1
    everyone = _count(page, SELECTED)
    page.screenshot(path=str(tmp_path / "cohorts.png"), full_page=True)
    page.select_option("#filters select[name=tier]", "PT_001")
    _submit(page)
    assert parse_qs(urlsplit(page.url).query)["tier"] == ["PT_001"]
    assert 0 < _count(page, SELECTED) < everyone
    assert _drawn(page, "retention-chart")["cells"] == 1


def _flows(page, tmp_path) -> None:
    """The flows of the whole history, then of one rule, then of one behaviour tag's holders."""
    page.click("#nav-flows")
    page.wait_for_load_state("load")
    drawn = _drawn(page, "flows-chart")
    assert drawn["links"] > 0 and drawn["nodes"] > 1, drawn
    total = _count(page, MOVES)
    page.screenshot(path=str(tmp_path / "flows.png"), full_page=True)
    page.select_option("#filters select[name=rule]", "R01")
    _submit(page)
    assert parse_qs(urlsplit(page.url).query)["rule"] == ["R01"]
    assert 0 < _count(page, MOVES) < total and _drawn(page, "flows-chart")["links"] > 0
    page.select_option("#filters select[name=rule]", "")
    behaviour = page.locator("#filters select[name=behaviour] option").nth(1).get_attribute("value")
    page.select_option("#filters select[name=behaviour]", behaviour)
    _submit(page)
    assert parse_qs(urlsplit(page.url).query)["behaviour"] == [behaviour]
    assert 0 < _count(page, MOVES) < total and _drawn(page, "flows-chart")["links"] > 0
    page.screenshot(path=str(tmp_path / "flows-filtered.png"), full_page=True)


def test_the_cohort_and_flow_pages_draw_and_filter_offline(dashboard_url, tmp_path):  # noqa: F811
    with offline_page() as (page, left):
        # given the dashboard, when a lead opens the cohorts, then the flows, and filters them
        page.goto(f"{dashboard_url}calls", wait_until="load")
        _cohorts(page, tmp_path)
        _flows(page, tmp_path)
    # then every chart drew, and nothing was asked of any host but 127.0.0.1
    assert left == []
    shots = ("cohorts.png", "flows.png", "flows-filtered.png")
    assert all((tmp_path / name).stat().st_size > 10_000 for name in shots)
