"""The learner page in a real browser against the real service: Debian's headless Chromium driven
by Playwright, ``bentoml serve`` on 127.0.0.1 over a state store of its own (two batch days with the
session's champion; the test writes an override, so it shares no workspace with other tests).

From the call list to a learner: the SHAP waterfall is drawn; the override form is sent first with
a wrong token (the page shows the service's 401 and the tag did not move), then with the right one
(the page reloads its data: the new tag in the heading, the override in its table). Every request
is intercepted: one that would leave 127.0.0.1 is aborted and fails the test.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from tests.e2e.browser import offline_page, open_prepared
from tests.serving.service_fixtures import (
    API_TOKEN,
    SNAPSHOT_DAY,
    ServedWorkspace,
    shared_workspace,
    start_service,
)

DRAWN = """div => [...div.querySelectorAll(".cartesianlayer .trace path")]
    .filter(path => (path.getAttribute("d") || "").length > 4).length"""
"""The trace paths plotly drew in a chart div with a real outline."""
REASON = "browser test: called, wants a break"


@pytest.fixture(scope="module")
def service(tmp_path_factory, simulated_log, champion_tracking_uri, champion):
    """The service on a state store and data directory of this module's own.

    BentoML settles on one model store per process, so the champion comes from the process's
    shared served workspace (imported there once); the store written here is this module's.
    """
    from serving.infra.store import StateStore
    from serving.settings import Settings
    from tests.serving.fixtures import packaged_ruleset, run_batch_day

    ruleset = packaged_ruleset(champion)
    shared = shared_workspace(
        tmp_path_factory, simulated_log, champion_tracking_uri, champion, ruleset
    )
    root = tmp_path_factory.mktemp("learner-browser")
    data_dir = root / "data"
    data_dir.mkdir()
    for source in (simulated_log.events_path, simulated_log.customers_path):
        shutil.copy(source, data_dir / source.name)
    settings = Settings(
        home=root / "home", data_dir=data_dir, mlflow_tracking_uri=champion_tracking_uri
    )
    with StateStore.from_settings(settings) as store:
        for day in (SNAPSHOT_DAY - timedelta(days=1), SNAPSHOT_DAY):
            run_batch_day(
                day, simulated_log, store, champion, ruleset, run_id=f"batch-{day}",
                data_dir=data_dir,
            )  # fmt: skip
    environment = shared.environment | {
        "LSTEP_HOME": str(settings.home.resolve()),
        "LSTEP_DATA_DIR": str(data_dir.resolve()),
        "LSTEP_STATE_URL": settings.state_database_url,
    }
    workspace = ServedWorkspace(settings.home, settings, environment, shared.bento_tag)
    served = start_service(workspace, root / "bentoml-serve.log")
    try:
        yield served
    finally:
        served.stop()


def _open_with_waterfall(page, url: str) -> None:
    """Open the learner page until its reasons are there (a worker's first explanation may
    miss the page's deadline; the page then says so and a reload shows them)."""
    for _ in range(10):
        page.goto(url, wait_until="load")
        if page.locator("#waterfall-chart").count():
            return
        assert "not ready within" in page.locator("#why-note").inner_text()
        page.wait_for_timeout(500)
    raise AssertionError(f"no waterfall on {url}")


def _drawn(page, chart_id: str) -> int:
    page.wait_for_function(f"() => document.querySelector('#{chart_id} .main-svg')")
    return page.eval_on_selector(f"#{chart_id}", DRAWN)


def _submit(page, *, tag: str, token: str) -> str:
    page.select_option("#override-form select[name=tag]", tag)
    page.fill("#override-form input[name=actor]", "cs-lead")
    page.fill("#override-form input[name=reason]", REASON)
    page.fill("#override-form input[name=token]", token)
    page.evaluate("() => { document.getElementById('override-result').textContent = ''; }")
    page.click("#override-form button[type=submit]")
    page.wait_for_function(
        "() => /refused|recorded|did not answer/.test("
        "document.getElementById('override-result').textContent)"
    )
    return page.locator("#override-result").inner_text()


def test_a_lead_reads_why_and_overrides_a_learner_with_the_token_only(service, tmp_path):
    with offline_page() as (page, left):
        # given the call list's first learner, opened from its link
        open_prepared(page, f"{service.url}/dashboard/calls")  # the service prepares at start
        first = page.locator("a.learner-link").first
        customer_id = first.inner_text()
        with page.expect_navigation(wait_until="load"):
            first.click()
        url = page.url
        assert urlsplit(url).path == f"/dashboard/learner/{customer_id}"
        _open_with_waterfall(page, url)
        # then the waterfall and the history are drawn, and the reasons listed
        assert _drawn(page, "waterfall-chart") > 0 and _drawn(page, "history-chart") > 0
        assert page.locator("#reasons tbody tr").count() >= 3
        page.screenshot(path=str(tmp_path / "learner.png"), full_page=True)
        before = page.locator("#current-tag").inner_text()
        target = "ST_002" if before == "ST_001" else "ST_001"
        # when the lead sends the form with a wrong token
        refused = _submit(page, tag=target, token="not-the-token")
        # then the page shows the service's 401 and nothing moved
        assert refused.startswith("refused (401)"), refused
        page.reload(wait_until="load")
        assert page.locator("#current-tag").inner_text() == before
        assert REASON not in page.locator("#overrides").inner_text()
        # when the lead sends it with the right token
        _open_with_waterfall(page, url)
        recorded = _submit(page, tag=target, token=API_TOKEN)
        # then the page says so and shows its reloaded data: the new tag, the override
        assert recorded.startswith(f"recorded: {customer_id} is now {target}"), recorded
        page.wait_for_function(
            f"() => document.getElementById('current-tag').textContent === '{target}'"
        )
        overrides = page.locator("#override-rows").inner_text()
        assert target in overrides and REASON in overrides and "cs-lead" in overrides
        assert _drawn(page, "history-chart") > 0  # charts drawn again after the reload
        assert page.locator("#override-form input[name=token]").input_value() == ""
        page.screenshot(path=str(tmp_path / "learner-overridden.png"), full_page=True)
        cookies = page.context.cookies()
        storage = page.evaluate("() => localStorage.length + sessionStorage.length")
    # and the token was kept nowhere, and nothing was asked of any host but 127.0.0.1
    assert cookies == [] and storage == 0
    assert left == []
    shots = ("learner.png", "learner-overridden.png")
    assert all((tmp_path / name).stat().st_size > 10_000 for name in shots)
