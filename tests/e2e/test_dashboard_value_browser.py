"""The value and model-health pages in a real browser: Debian's headless Chromium driven by
Playwright against the dashboard app on 127.0.0.1 over the e2e workspace (three weekly batch days,
the session's champion).

Both pages are opened from the overview's navigation, a filter is applied to the value page
through its form, and every chart must have been drawn by the bundled plotly.js (an SVG with a
trace's path in it). A request that would leave 127.0.0.1 is aborted and fails the test.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.browser import offline_page
from tests.e2e.test_dashboard_browser import _assert_every_chart_drawn, served_dashboard


@pytest.fixture(scope="module")
def dashboard_url(e2e_workspace):
    """The dashboard app mounted at /dashboard, its model page on the workspace's MLflow."""
    with served_dashboard(e2e_workspace, with_champions=True) as url:
        yield url


def test_the_value_and_model_pages_draw_every_chart_offline(dashboard_url, tmp_path):
    with offline_page() as (page, left):
        # given the overview, when the lead follows the navigation to the value page
        page.goto(dashboard_url, wait_until="load")
        with page.expect_navigation(wait_until="load"):
            page.click("#nav-value")
        # then the value chart (and the ROI and spend charts, once there is something to
        # draw) is drawn, with the ROI table and the costs used
        assert urlsplit(page.url).path.endswith("/value")
        _assert_every_chart_drawn(page, at_least=1)
        assert page.locator("#roi-table tbody tr").count() > 0
        assert page.locator("#cost-table tbody tr").count() == 5
        page.screenshot(path=str(tmp_path / "value.png"), full_page=True)
        # when a tier is chosen through the form
        page.select_option("#filters select[name=tier]", "PT_002")
        with page.expect_navigation(wait_until="load"):
            page.click("#filters button[type=submit]")
        # then the page is that tier's, every chart drawn again
        assert parse_qs(urlsplit(page.url).query)["tier"] == ["PT_002"]
        tiers = page.locator("#value-table tbody tr td:first-child").all_inner_texts()
        assert set(tiers) == {"PT_002"}
        _assert_every_chart_drawn(page, at_least=1)
        page.screenshot(path=str(tmp_path / "value-filtered.png"), full_page=True)
        # when the lead opens the model page
        with page.expect_navigation(wait_until="load"):
            page.click("#nav-model")
        # then the card, the reliability chart and the drift chart are all there and drawn
        assert page.locator("#metrics-table").count() == 1
        assert "Brier score" in page.locator("#brier").inner_text()
        _assert_every_chart_drawn(page, at_least=2)
        page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
    # and nothing was asked of any host but 127.0.0.1
    assert left == []
    shots = ("value.png", "value-filtered.png", "model.png")
    assert all((tmp_path / name).stat().st_size > 10_000 for name in shots)
