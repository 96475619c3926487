"""The service over real HTTP: a ``bentoml serve`` subprocess, ``bentoml.SyncHTTPClient`` and httpx.

Learners are taken from the middle of the snapshot: ``test_service`` applies and overrides
learners at its two ends in the same workspace.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import bentoml
import httpx
import pandas as pd
import pytest

from tests.serving.dashboard_helpers import get_prepared
from tests.serving.fixtures import assert_same, packaged_ruleset
from tests.serving.service_fixtures import (
    API_TOKEN,
    MAX_BATCH,
    MAX_BODY_BYTES,
    OTHER_DAY,
    SNAPSHOT_DAY,
    ServedService,
    ServedWorkspace,
    start_service,
)

AS_OF = SNAPSHOT_DAY.isoformat()


@pytest.fixture(scope="module")
def learners(workspace: ServedWorkspace) -> list[str]:
    """Twenty learners of the snapshot's middle."""
    snapshot = pd.read_parquet(workspace.settings.data_path / "features" / f"as_of={AS_OF}.parquet")
    middle = len(snapshot) // 2
    return list(snapshot["customer_id"].iloc[middle : middle + 20])


@pytest.fixture(scope="module")
def client(served: ServedService):
    """BentoML's client, with the API token as its bearer token."""
    with bentoml.SyncHTTPClient(served.url, token=API_TOKEN, timeout=60) as opened:
        yield opened


def post(served: ServedService, route: str, body, **headers) -> httpx.Response:
    return httpx.post(f"{served.url}{route}", json=body, headers=headers, timeout=60)


def test_health_and_metrics_endpoints_stay_on(served):
    for route in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{served.url}{route}", timeout=10).status_code == 200
    assert "bentoml_service_request" in httpx.get(f"{served.url}/metrics", timeout=10).text


def test_the_client_scores_by_id_with_the_batch_jobs_scores(client, workspace, learners):
    # given learners the batch job scored on its latest day
    ids = learners[:3]
    with workspace.open_store() as store:
        stored = store.scores_frame(SNAPSHOT_DAY).set_index("customer_id")["p_churn"]
    # when scored over HTTP by id
    response = client.score({"learners": [{"customer_id": c} for c in ids], "as_of": AS_OF})
    # then every learner comes back with the batch job's score and a full record
    assert [record["customer_id"] for record in response["learners"]] == ids
    for record in response["learners"]:
        assert record["p_churn"] == pytest.approx(stored[record["customer_id"]], abs=1e-12)
        assert record["feature_source"] == "snapshot"
        assert {"proposed_tag", "rule_id", "priority", "action", "control", "reasons"} <= set(
            record
        )
    assert response["dry_run"] is True


def test_the_client_explains_and_gives_the_status(client, workspace, learners):
    explanation = client.explain({"customer_id": learners[3], "as_of": AS_OF})
    total = sum(reason["points"] for reason in explanation["reasons"])
    assert total == pytest.approx(100 * (explanation["p_raw"] - explanation["p_base"]), abs=1e-9)
    status = client.status({"customer_id": learners[3]})
    with workspace.open_store() as store:
        assert status["tag"] == store.current(learners[3])["tag"]
        assert len(status["history"]) == len(store.history(learners[3]))


def test_apply_with_the_token_is_accepted(client, learners):
    # given the client's bearer token, when apply is asked, then it runs (moves or not)
    response = client.score(
        {"learners": [{"customer_id": learners[4]}], "as_of": AS_OF, "apply": True}
    )
    assert response["dry_run"] is False
    (record,) = response["learners"]
    assert record["applied"] or record["not_applied_reason"]


@pytest.mark.parametrize("as_of", [AS_OF, OTHER_DAY.isoformat()], ids=["answers", "scorer"])
def test_concurrent_requests_are_answered_like_single_ones(served, learners, as_of):
    # given each learner scored alone, one request at a time (on the snapshot day the day's
    # answers serve them; on another day the scorer, which merges concurrent ones into batches)
    def score_one(customer_id: str) -> httpx.Response:
        return post(served, "/score", {"learners": [{"customer_id": customer_id}], "as_of": as_of})

    alone = {c: score_one(c).json()["learners"][0] for c in learners[:6]}
    # when sixteen requests arrive at once
    ids = learners[:16]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(score_one, ids))
    # then every one succeeds with the same record as alone
    assert [response.status_code for response in responses] == [200] * len(ids)
    for response in responses:
        record = response.json()["learners"][0]
        if record["customer_id"] in alone:
            assert_same(record, alone[record["customer_id"]])


def test_metrics_count_the_learners_of_each_scoring_path(served, learners):
    # given the counts before
    def counts() -> dict[str, float]:
        text = httpx.get(f"{served.url}/metrics", timeout=10).text
        found = re.findall(r'^lstep_score_learners_total\{path="(\w+)"\} ([\d.e+]+)$', text, re.M)
        return {path: float(value) for path, value in found}

    before = counts()
    # when two learners are scored on the snapshot day and one on another day
    body = {"learners": [{"customer_id": c} for c in learners[:2]], "as_of": AS_OF}
    assert post(served, "/score", body).status_code == 200
    other = {"learners": [{"customer_id": learners[0]}], "as_of": OTHER_DAY.isoformat()}
    assert post(served, "/score", other).status_code == 200
    # then the day's answers counted two and the scorer one
    after = counts()
    assert after["answers"] - before.get("answers", 0.0) == 2
    assert after["scorer"] - before.get("scorer", 0.0) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"learners": [{"customer_id": ""}]}, "learners.0.customer_id"),
        ({"learners": [{"customer_id": "C1"}], "aply": True}, "aply"),
        ({"learners": []}, "learners"),
        ({"learners": [{"customer_id": "C1", "events": [{"ts": "x"}]}]}, "learners.0.events.0"),
        ({"learners": [{"customer_id": "C1"}], "as_of": "2026-02-30"}, "as_of"),
    ],
)
def test_a_bad_payload_is_400_naming_the_field(served, body, field):
    response = post(served, "/score", body)
    assert response.status_code == 400
    error = response.json()
    assert field in error["detail"]
    assert isinstance(error["error"], str)


def test_apply_without_the_token_is_401(served, learners):
    body = {"learners": [{"customer_id": learners[5]}], "as_of": AS_OF, "apply": True}
    assert post(served, "/score", body).status_code == 401
    assert post(served, "/score", body, authorization="Bearer wrong").status_code == 401


def test_an_override_with_a_wrong_token_is_401_and_changes_nothing(served, workspace, learners):
    customer_id = learners[6]
    with workspace.open_store() as store:
        before = store.history(customer_id)
    body = {"customer_id": customer_id, "tag": "ST_005", "actor": "x", "reason": "y"}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": API_TOKEN}):
        assert post(served, "/override", body, **headers).status_code == 401
    with workspace.open_store() as store:
        pd.testing.assert_frame_equal(store.history(customer_id), before)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/score", {"learners": [{"customer_id": "NOBODY-9"}], "as_of": AS_OF}),
        ("/explain", {"customer_id": "NOBODY-9", "as_of": AS_OF}),
        ("/status", {"customer_id": "NOBODY-9"}),
    ],
)
def test_an_unknown_learner_is_404_naming_them(served, route, body):
    response = post(served, route, body)
    assert response.status_code == 404
    assert "NOBODY-9" in response.json()["error"]


def test_more_learners_than_the_limit_is_413(served):
    body = {"learners": [{"customer_id": f"C{n:07d}"} for n in range(MAX_BATCH + 1)]}
    response = post(served, "/score", body)
    assert response.status_code == 413
    assert "LSTEP_MAX_BATCH" in response.json()["error"]


def test_an_as_of_after_today_is_422(served, learners):
    response = post(
        served, "/score", {"learners": [{"customer_id": learners[0]}], "as_of": "2199-01-01"}
    )
    assert response.status_code == 422
    assert "after today" in response.json()["error"]


def test_the_report_page_is_served_read_only_and_opens_in_chromium(
    served, workspace, simulated_log, champion, tmp_path
):
    from serving.app.report import ReportInputs, write_report
    from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, require_browser

    # given a service whose reports directory is empty
    page = f"{served.url}/pages/report"
    reports = workspace.settings.reports_path
    for old in reports.glob("report-*.html") if reports.exists() else []:
        old.unlink()
    # then the page says there is no report yet, and a write is refused (read-only)
    assert httpx.get(page, timeout=30).status_code == 404
    assert httpx.post(page, timeout=30).status_code == 405
    # when the report of the snapshot day is written
    with workspace.open_store() as store:
        inputs = ReportInputs(
            champion, packaged_ruleset(champion), simulated_log.events, simulated_log.customers
        )
        write_report(store, workspace.settings, as_of=SNAPSHOT_DAY, inputs=inputs)
    # then the service serves it, and it opens in Chromium with its KPI table and a learner
    served_page = httpx.get(page, timeout=30)
    assert served_page.status_code == 200
    assert 'id="kpis"' in served_page.text
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.goto(page)
            assert tab.locator("#kpi-table tbody tr").count() == 6
            assert tab.locator("[id^=learner-]").first.is_visible()
            tab.screenshot(path=str(tmp_path / "served-report.png"), full_page=True)
        finally:
            browser.close()


# --- the door: body size, content types, logs -----------------------------------------------------


def test_a_body_over_the_limit_is_413_before_parsing(served):
    # given a body over LSTEP_MAX_BODY_BYTES, announced by its length and sent chunked
    body = b'{"learners": [' + b'{"customer_id": "C0000001"},' * (MAX_BODY_BYTES // 20) + b"]}"
    announced = httpx.post(
        f"{served.url}/score", content=body, headers={"content-type": "application/json"}
    )

    def chunks():
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    streamed = httpx.post(
        f"{served.url}/score", content=chunks(), headers={"content-type": "application/json"}
    )
    # then both are refused with 413 naming the setting, and the service still answers
    for response in (announced, streamed):
        assert response.status_code == 413, response.text
        assert "LSTEP_MAX_BODY_BYTES" in response.json()["error"]
    assert httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("route", "content"),
    [
        ("/score", {"files": {"learners": ("x.json", b"[]")}}),
        (
            "/status",
            {"content": b'{"customer_id": "C0000001"}', "headers": {"content-type": "text/plain"}},
        ),
        ("/override", {"data": {"customer_id": "C0000001"}}),
    ],
)
def test_bodies_that_are_not_json_are_415(served, route, content):
    response = httpx.post(f"{served.url}{route}", timeout=30, **content)
    assert response.status_code == 415, response.text
    assert "send application/json" in response.json()["error"]


def test_client_errors_are_logged_as_one_info_line_without_the_body(served):
    # given a request that breaks the request model, carrying a recognisable value
    marker = "MARKER-in-the-body-0123"
    response = post(served, "/score", {"learners": [{"customer_id": "C0000001"}], "aply": marker})
    assert response.status_code == 400
    # then the log has one line for it, at INFO, and neither a traceback nor the body
    lines = served.log_tail(400).splitlines()
    said = [n for n, line in enumerate(lines) if "client error 400 on /score [POST]" in line]
    assert said and "[INFO]" in lines[said[-1]]
    # (a traceback is written with its record, so it would be the very next line)
    assert not any(line.startswith("Traceback") for line in lines[said[-1] + 1 : said[-1] + 2])
    assert not any(marker in line for line in lines)


def test_the_openapi_document_declares_every_status_the_api_answers(served):
    document = httpx.get(f"{served.url}/docs.json", timeout=30).json()
    for route in ("/score", "/explain", "/status", "/override"):
        declared = set(document["paths"][route]["post"]["responses"])
        assert {"200", "400", "401", "404", "409", "413", "415", "422", "503"} <= declared, route


def test_an_empty_token_over_http_refuses_every_write_and_warns_at_start_up(
    workspace: ServedWorkspace, learners: list[str], tmp_path
):
    # given the service started as `LSTEP_API_TOKEN= lstep serve` (set, but empty; a blank one
    # is read by the same settings, which test_service.py holds to it in process: a service
    # start here costs ~19 s of CI)
    served = start_service(workspace, tmp_path / "serve.log", {"LSTEP_API_TOKEN": ""})
    try:
        with workspace.open_store() as store:
            before = (store.current(learners[0]), len(store.overrides_frame()))
        override = {"customer_id": learners[0], "actor": "x", "reason": "probe"}
        apply = {"learners": [{"customer_id": learners[0]}], "as_of": AS_OF, "apply": True}
        # when writes come with an empty bearer, any bearer, or none (HTTP clients strip a
        # trailing blank, so "Bearer " arrives as "Bearer"; the in-process tests send it as is)
        for header in ("Bearer", f"Bearer {API_TOKEN}", ""):
            headers = {"authorization": header} if header else {}
            refused = [
                httpx.post(f"{served.url}/override", json=override, headers=headers, timeout=60),
                httpx.post(f"{served.url}/score", json=apply, headers=headers, timeout=60),
            ]
            # then each is a 401, over real HTTP
            assert [response.status_code for response in refused] == [401, 401], header
        # and nothing was written, and the start-up log said why writes are refused
        with workspace.open_store() as store:
            assert (store.current(learners[0]), len(store.overrides_frame())) == before
        assert "LSTEP_API_TOKEN is empty" in served.log_tail(400)
    finally:
        served.stop()


def test_the_dashboard_is_served_read_only_with_its_own_plotly(served, workspace):
    # given the service over the batch workspace, when the overview is asked with two filters
    base = f"{served.url}/dashboard"
    overview = get_prepared(base, params={"tier": "PT_001", "tag": "ST_001"}, timeout=60)
    # then it draws its charts with the plotly.js the service itself serves, cached
    assert overview.status_code == 200
    assert (
        'id="tags-chart"' in overview.text
        and 'src="/dashboard/static/plotly.min.js"' in overview.text
    )
    script = httpx.get(f"{base}/static/plotly.min.js", timeout=60)
    assert script.status_code == 200 and "max-age" in script.headers["cache-control"]
    assert (
        script.headers["content-type"].startswith("text/javascript") and len(script.content) > 1e6
    )
    # and the call list links learners to their pages, which show their history
    calls = get_prepared(f"{base}/calls", params={"sort": "p_churn"}, timeout=60)
    learner = re.search(r'class="learner-link" href="(/dashboard/learner/[^"]+)"', calls.text)
    assert learner is not None
    page = httpx.get(f"{served.url}{learner.group(1)}", timeout=60)
    assert page.status_code == 200 and 'id="moves"' in page.text
    # bad input is a clear 400 naming it, an unknown learner a 404, a write is refused
    bad = httpx.get(f"{base}/", params={"tier": "PT_042"}, timeout=60)
    assert bad.status_code == 400 and "PT_042" in bad.text
    assert httpx.get(f"{base}/learner/nobody", timeout=60).status_code == 404
    assert httpx.post(f"{base}/calls", timeout=60).status_code in (405, 415)  # never written
