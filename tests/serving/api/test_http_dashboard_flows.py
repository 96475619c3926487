"""The dashboard's cohort and flow pages, and the behaviour filter, over real HTTP on the service
(the session's ``bentoml serve`` subprocess over the batch workspace)."""

from __future__ import annotations

import re

from tests.serving.dashboard_helpers import get_prepared, page_charts
from tests.serving.service_fixtures import ServedService


def test_the_cohorts_page_is_served_with_its_heatmap_and_filters(served: ServedService):
    # given the service, when the retention grid is asked for everyone and for one tier
    base = f"{served.url}/dashboard"
    everyone = get_prepared(f"{base}/cohorts", timeout=120)
    pro = get_prepared(f"{base}/cohorts", params={"tier": "PT_001"}, timeout=120)
    # then both draw a heatmap with the plotly.js the service serves, the filter narrowing it
    assert everyone.status_code == 200 and pro.status_code == 200
    assert 'src="/dashboard/static/plotly.min.js"' in everyone.text
    grid = page_charts(everyone.text)["retention-chart"]["data"][0]
    assert grid["type"] == "heatmap"
    assert page_charts(pro.text)["retention-chart"]["data"][0]["z"] != grid["z"]
    selected = [int(re.search(r"(\d+) learner\(s\) selected", page.text).group(1))
                for page in (everyone, pro)]  # fmt: skip
    assert 0 < selected[1] < selected[0]
    # and a bad filter is a 400 naming it
    bad = get_prepared(f"{base}/cohorts", params={"cohort": "2026-13"}, timeout=60)
    assert bad.status_code == 400 and "2026-13" in bad.text


def test_the_flows_page_narrows_to_a_rule_and_refuses_bad_input(served: ServedService):
    base = f"{served.url}/dashboard"
    everything = get_prepared(f"{base}/flows", timeout=120)
    assert everything.status_code == 200
    sankey = page_charts(everything.text)["flows-chart"]["data"][0]
    total = sum(sankey["link"]["value"])
    assert sankey["type"] == "sankey" and f"{total} move(s)" in everything.text
    # the table's rule links narrow the flows to that rule: fewer moves, that rule's only
    rule = re.search(r'class="rule-link" href="[^"]*rule=(R\d\d)', everything.text).group(1)
    one = get_prepared(f"{base}/flows", params={"rule": rule}, timeout=120)
    moved = sum(page_charts(one.text)["flows-chart"]["data"][0]["link"]["value"])
    assert one.status_code == 200 and 0 < moved < total
    assert re.findall(r'class="rule-link" href="[^"]*rule=(\w+)', one.text) == [rule]
    # a bad rule or day is a 400 naming it
    for params, named in (
        ({"rule": "R99"}, "R99"),
        ({"start": "2026-02-30"}, "2026-02-30"),
        ({"start": "2026-05-20", "end": "2026-05-01"}, "starts"),
    ):
        bad = get_prepared(f"{base}/flows", params=params, timeout=60)
        assert bad.status_code == 400 and named in bad.text, params


def test_the_behaviour_filter_over_http(served: ServedService):
    base = f"{served.url}/dashboard"
    overview = get_prepared(f"{base}/", timeout=300)
    offered = re.findall(r'<option value="(BT_\d{3})"', overview.text)
    assert offered, "no behaviour tag offered"
    everyone = int(re.search(r"(\d+) learner\(s\) selected", overview.text).group(1))
    narrowed = get_prepared(f"{base}/", params={"behaviour": offered[0]}, timeout=300)
    holders = int(re.search(r"(\d+) learner\(s\) selected", narrowed.text).group(1))
    assert narrowed.status_code == 200 and 0 < holders < everyone
    # the call list and the value page narrow to the tag's holders too
    for page in ("/calls", "/value"):
        both = [get_prepared(f"{base}{page}", params=params, timeout=300)
                for params in ({}, {"behaviour": offered[0]})]  # fmt: skip
        assert [answer.status_code for answer in both] == [200, 200], page
        assert f'<option value="{offered[0]}" selected>' in both[1].text, page
    absent = next(f"BT_{n:03d}" for n in range(1, 999) if f"BT_{n:03d}" not in offered)
    for page in ("/", "/cohorts", "/flows", "/calls", "/value"):
        refused = get_prepared(f"{base}{page}", params={"behaviour": absent}, timeout=120)
        assert refused.status_code == 400 and absent in refused.text, page
    malformed = get_prepared(f"{base}/flows", params={"behaviour": "BT_1"}, timeout=60)
    assert malformed.status_code == 400 and "BT_1" in malformed.text
