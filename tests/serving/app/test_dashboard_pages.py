"""The dashboard's pages on a small workspace: three batch days of the session's log, rules only
(the pages read the store, not the model)."""

from __future__ import annotations

import re
import threading

import pandas as pd
import pytest

from serving.app.dashboard_cohorts import behaviours_held, with_behaviour
from serving.app.dashboard_data import DashboardFilters, kpi_trend
from serving.app.dashboard_pages import Links, calls_page, overview_page, write_dashboard
from serving.app.dashboard_value_page import value_page
from serving.app.kpi_inputs import kpis_at
from serving.app.kpis import compute_kpis
from serving.core.calllist import URGENT_PRIORITIES
from tests.serving.dashboard_helpers import page_charts
from tests.serving.fixtures import packaged_ruleset

LINKS = Links("/dashboard")


def test_the_kpi_trend_ends_on_the_kpis_of_lstep_kpis(dashboard, simulated_log):
    # given the workspace's last batch day
    workspace, cache = dashboard
    frames = cache.frames()
    # when the trend is computed over the batch days
    trend = kpi_trend(cache.kpi_inputs(frames), frames.customers, frames.days)
    # then its last day holds the KPIs `lstep kpis` computes on that day, one per day and KPI
    expected = kpis_at(
        workspace.store, frames.latest_day, customers=frames.customers, events=None,
        ruleset=packaged_ruleset(None), data_dir=workspace.settings.data_path,
    )  # fmt: skip
    last = trend[trend["day"] == trend["day"].max()].set_index("id")["value"]
    for kpi in expected:
        if kpi.id == "automation_accuracy":
            continue  # the dashboard judges risk moves by their labels too (events given)
        assert (last[kpi.id] == kpi.value) or (kpi.value is None and last.isna()[kpi.id])
    assert len(trend) == 6 * len(frames.days)


def test_the_trend_of_many_days_at_once_is_each_days_kpis(dashboard):
    # given the KPIs' inputs of the workspace's three batch days
    _, cache = dashboard
    frames = cache.frames()
    inputs = cache.kpi_inputs(frames)
    # when the trend computes every day at once
    trend = kpi_trend(inputs, frames.customers, frames.days).set_index(["day", "id"])
    # then each day's values are those of that day computed alone
    for day in frames.days:
        alone = compute_kpis(
            inputs.transitions, inputs.scores, frames.customers, as_of=day,
            outcomes=inputs.outcomes, decisions=inputs.decisions,
        )  # fmt: skip
        values = [trend.loc[(pd.Timestamp(day), kpi.id), "value"] for kpi in alone]
        expected = [float("nan") if kpi.value is None else kpi.value for kpi in alone]
        assert values == pytest.approx(expected, nan_ok=True)
    assert trend.groupby(level="day")["value"].apply(tuple).nunique() > 1  # the days differ


def test_the_overview_draws_tags_kpis_and_value_and_filters_narrow_it(dashboard):
    _, cache = dashboard
    links = Links("/dashboard")
    everyone = overview_page(cache, DashboardFilters(), links)
    charts = page_charts(everyone)
    assert {"tags-chart", "value-chart"} <= set(charts)
    assert len([name for name in charts if name.startswith("kpi-")]) == 6
    total = sum(sum(trace["y"][-1:]) for trace in charts["tags-chart"]["data"])
    # a filter to one tier and one tag counts fewer learners, all in that tag
    narrowed = page_charts(
        overview_page(cache, DashboardFilters(tier="PT_001", tag="ST_001"), links)
    )
    last = {trace["name"][:6]: trace["y"][-1] for trace in narrowed["tags-chart"]["data"]}
    assert 0 < last["ST_001"] < total
    assert sum(count for tag, count in last.items() if tag != "ST_001") == 0
    assert "https://" not in everyone and "cdn" not in everyone.lower()


def test_the_call_list_links_each_learner_and_refuses_an_unknown_sort(dashboard):
    _, cache = dashboard
    html = calls_page(cache, Links("/dashboard"), sort="value_at_risk")
    links = re.findall(r'class="learner-link" href="(/dashboard/learner/[^"]+)"', html)
    assert links
    with pytest.raises(ValueError, match="unknown sort 'mrr'"):
        calls_page(cache, Links("/dashboard"), sort="mrr")


def test_the_static_export_links_its_pages_relatively_with_plotly_beside_them(dashboard, tmp_path):
    _, cache = dashboard
    written = write_dashboard(cache, tmp_path, learners=3)
    names = {path.name for path in written}
    assert {"index.html", "calls.html", "plotly.min.js"} <= names
    learners = sorted(name for name in names if name.startswith("learner-"))
    assert len(learners) == 3
    calls = (tmp_path / "calls.html").read_text()
    assert all(f'href="{name}"' in calls for name in learners)
    assert 'src="plotly.min.js"' in (tmp_path / "index.html").read_text()
    assert "/dashboard" not in calls  # no link to the service from a file
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000


def test_a_page_served_while_the_history_refreshes_says_so(dashboard):
    # Given a refresh running (a thread the test holds)
    _, cache = dashboard
    gate = threading.Event()
    cache._refresh = threading.Thread(target=gate.wait, daemon=True)
    cache._refresh.start()
    try:
        # Then the pages served meanwhile say their figures are being refreshed
        assert 'id="refreshing"' in calls_page(cache, Links("/dashboard"))
        assert 'id="refreshing"' in overview_page(cache, DashboardFilters(), Links("/dashboard"))
    finally:
        gate.set()
        cache._refresh.join()
    # And once it is over they do not
    assert 'id="refreshing"' not in calls_page(cache, Links("/dashboard"))


def test_the_call_list_narrows_to_a_behaviour_tags_holders_and_refuses_one_nobody_holds(dashboard):
    # given the latest day's scores and a behaviour tag some learners hold
    _, cache = dashboard
    scores = cache.frames().latest_scores
    behaviour = behaviours_held(cache.frames())[0]
    holds = scores["behaviour_tags"].fillna("").str.split(",").map(lambda tags: behaviour in tags)
    urgent = scores["priority"].isin(list(URGENT_PRIORITIES)) & ~scores["control"].astype(bool)
    # when the call list is asked for everyone and for the tag's holders
    everyone = calls_page(cache, LINKS, limit=1000)
    holders = calls_page(cache, LINKS, limit=1000, behaviour=behaviour)
    # then it lists the urgent learners who hold it, no one else
    listed = re.findall(r'class="learner-link" href="[^"]+">([^<]+)</a>', holders)
    assert sorted(listed) == sorted(scores.loc[urgent & holds, "customer_id"].astype(str))
    assert f"{int((urgent & holds).sum())} learner(s) to call" in holders
    assert 0 < len(listed) < len(re.findall(r'class="learner-link"', everyone))
    # and a tag nobody holds, or a malformed one, is refused naming it
    with pytest.raises(ValueError, match="BT_999"):
        calls_page(cache, LINKS, behaviour="BT_999")
    with pytest.raises(ValueError, match="BT_1"):
        calls_page(cache, LINKS, behaviour="BT_1")


def test_the_value_page_narrows_to_a_behaviour_tags_holders(dashboard):
    _, cache = dashboard
    behaviour = behaviours_held(cache.frames())[0]
    everyone = value_page(cache, DashboardFilters(), LINKS)
    holders = value_page(cache, DashboardFilters(behaviour=behaviour), LINKS)
    counts = [int(re.search(r"(\d+) learner\(s\) selected", page).group(1))
              for page in (everyone, holders)]  # fmt: skip
    expected = with_behaviour(cache.frames(), cache.frames().latest_scores, behaviour)
    assert 0 < counts[1] == len(expected) < counts[0]
    assert f'<option value="{behaviour}" selected>' in holders
