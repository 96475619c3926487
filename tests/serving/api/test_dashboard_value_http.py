"""The value and model-health pages over real HTTP on the running service (``lstep serve`` on
the batch workspace: two batch days, the session's champion, its 14-day label window)."""

from __future__ import annotations

import httpx

from tests.serving.dashboard_helpers import get_prepared


def test_the_value_page_is_served_with_its_charts_and_costs(served):
    # given the service, when the value page is asked for one tier
    base = f"{served.url}/dashboard"
    page = get_prepared(f"{base}/value", params={"tier": "PT_001"}, timeout=120)
    # then it draws the value chart with the service's own plotly.js and lists the costs used
    assert page.status_code == 200
    assert 'id="value-chart"' in page.text and 'src="/dashboard/static/plotly.min.js"' in page.text
    assert 'id="cost-table"' in page.text and "<td>csm_task</td>" in page.text
    # and the campaigns planned on the last two days have no complete window yet: none is measured
    assert "not measured yet" in page.text and 'id="roi-chart"' not in page.text
    # and a bad filter is a 400 naming it
    bad = get_prepared(f"{base}/value", params={"tag": "ST_042"}, timeout=60)
    assert bad.status_code == 400 and "ST_042" in bad.text
    bad_day = get_prepared(f"{base}/value", params={"end": "yesterday"}, timeout=60)
    assert bad_day.status_code == 400 and "yesterday" in bad_day.text


def test_the_model_page_is_served_with_the_champions_card_and_drift(served):
    # given the service, when the model page is asked
    page = get_prepared(f"{served.url}/dashboard/model", timeout=180)
    # then it shows the champion's card and the drift since training
    assert page.status_code == 200
    assert 'id="metrics-table"' in page.text and 'id="drift-chart"' in page.text
    # and no batch day's 14-day label window has closed in the log yet, which it says
    assert "no labelled day yet" in page.text
    assert httpx.post(f"{served.url}/dashboard/model", timeout=60).status_code in (405, 415)
