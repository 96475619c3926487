"""The HTML report in a real browser: Debian's headless Chromium driven by Playwright.

Never a downloaded browser. Outside CI the test skips with a message naming what is missing;
with CI=true a missing browser or driver is a failure.
"""

from __future__ import annotations

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, require_browser


def test_report_opens_in_chromium_with_kpis_charts_and_a_learner(e2e_workspace, tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    from serving.app.report import write_report

    # given the report of the workspace's last batch day, written to disk
    workspace, champion = e2e_workspace
    path = write_report(
        workspace.store, workspace.settings, as_of=workspace.last_day,
        inputs=workspace.inputs(champion),
    )  # fmt: skip
    requested: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            # when Chromium opens the file
            page.goto(path.as_uri(), wait_until="load")
            # then the KPI table shows the six KPIs
            assert page.locator("#kpi-table").is_visible()
            assert page.locator("#kpi-table tbody tr").count() == 6
            # and every chart decoded to a real image
            widths = page.eval_on_selector_all(
                "img", "images => images.map(image => image.complete ? image.naturalWidth : 0)"
            )
            assert len(widths) >= 4 and all(width > 0 for width in widths)
            assert page.locator("#tags-over-time img").is_visible()
            assert page.locator("#model-card img").is_visible()
            # and the first learner's section, reached from the call list, shows its waterfall
            page.locator("#call-table tbody tr a").first.click()
            learner = page.locator("article.learner").first
            assert learner.is_visible() and learner.locator("img.waterfall").is_visible()
            assert page.locator("#drift-table tbody tr").count() == 8
            shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    # and the page asked for nothing but its own file; the screenshot is saved
    assert {url.split(":", 1)[0] for url in requested} <= {"file", "data"}
    assert (tmp_path / "report.png").stat().st_size == len(shot) > 10_000
