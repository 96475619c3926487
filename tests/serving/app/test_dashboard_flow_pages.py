"""The cohort and flow pages, the behaviour filter and treated vs control on a small workspace:
three weekly batch days of the session's log, rules only (the pages read the store)."""

from __future__ import annotations

import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from serving.app.dashboard import DashboardCache, DashboardSource
from serving.app.dashboard_cohorts import NEW, retention_grid
from serving.app.dashboard_data import DashboardFilters, kpi_trend, learners_of
from serving.app.dashboard_flow_pages import cohorts_page, flows_page, selected_learners
from serving.app.dashboard_pages import Links, overview_page, write_dashboard
from serving.app.kpis import compute_kpis
from tests.serving.dashboard_helpers import DASHBOARD_NOW, page_charts
from tests.serving.fixtures import packaged_ruleset

LINKS = Links("/dashboard")


def _naive_grid(transitions: pd.DataFrame, customers: pd.DataFrame, latest: date) -> pd.Series:
    """The grid's known and live counts the slow way: every learner x week end, as-of joined."""
    enrolled = pd.to_datetime(customers["enrolled_at"], utc=True).dt.tz_localize(None)
    people = pd.DataFrame(
        {"customer_id": customers["customer_id"], "enrolled": enrolled.dt.normalize()}
    )
    weeks = pd.DataFrame({"week": np.arange(0, 60)})
    ends = people.merge(weeks, how="cross")
    ends["end"] = (ends["enrolled"] + pd.to_timedelta(ends["week"] * 7 + 6, unit="D")).astype(
        "datetime64[ns]"
    )
    ends = ends[ends["end"] <= pd.Timestamp(latest)].sort_values("end")
    log = transitions.sort_values("id")[["customer_id", "as_of", "to_tag"]]
    log = log.assign(as_of=pd.to_datetime(log["as_of"]).astype("datetime64[ns]"))
    log = log.sort_values("as_of", kind="stable")  # a day's later moves stay later
    tagged = pd.merge_asof(ends, log, left_on="end", right_on="as_of", by="customer_id")
    tagged = tagged.dropna(subset=["to_tag"])
    tagged["cohort"] = tagged["enrolled"].dt.strftime("%Y-%m")
    tagged["live"] = tagged["to_tag"] != "ST_006"
    return tagged.groupby(["cohort", "week"])["live"].agg(["size", "sum"])


def test_the_grid_is_the_as_of_tag_of_every_learner_at_every_week_end(dashboard):
    # given the workspace's audit log and customers
    _, cache = dashboard
    frames = cache.frames()
    # when the grid is computed by its running sums
    grid = retention_grid(frames.transitions, frames.customers, frames.latest_day)
    known = grid[grid["known"] > 0].set_index(["cohort", "week"])
    # then each cell equals the slow as-of join of every learner's every week end
    naive = _naive_grid(frames.transitions, frames.customers, frames.latest_day)
    assert len(known) == len(naive) > 5
    assert known["known"].tolist() == naive["size"].tolist()
    assert known["live"].tolist() == naive["sum"].astype(int).tolist()
    assert (known["known"] <= known["cohort_size"]).all()


def test_the_learners_selected_are_those_the_customers_joined_again_select(dashboard):
    # Given the workspace's frames, its overview seen (everyone's tiers and cohorts kept)
    _, cache = dashboard
    overview_page(cache, DashboardFilters(), LINKS)
    frames = cache.frames()
    no_tags = pd.DataFrame({"customer_id": pd.Series(dtype=str), "tag": pd.Series(dtype=str)})
    cohort = pd.to_datetime(frames.customers["enrolled_at"]).dt.strftime("%Y-%m").iloc[0]
    tier = str(frames.customers["product_tag"].iloc[0])
    cases = [
        DashboardFilters(tier=tier),
        DashboardFilters(cohort=cohort),
        DashboardFilters(tier=tier, cohort=cohort),
        DashboardFilters(tier=tier, tag="ST_001"),  # these pages select nobody by a tag
        DashboardFilters(tier="PT_003", cohort="1999-01"),
    ]
    for filters in cases:
        # When the cohorts and flows pages select the filters' learners
        chosen = selected_learners(frames, filters)
        # Then they are those the customers joined again with no tags select (the former way)
        joined = learners_of(frames.customers, no_tags, filters)
        assert sorted(chosen["customer_id"]) == sorted(joined["customer_id"]), filters
        assert chosen["tag"].isna().all()
    assert len(selected_learners(frames, cases[0])) > 0
    assert selected_learners(frames, cases[3]).empty
    assert selected_learners(frames, DashboardFilters(tag="ST_001")) is None


def test_the_cohorts_page_draws_the_grid_with_the_tag_mix_and_filters_it(dashboard):
    _, cache = dashboard
    html = cohorts_page(cache, DashboardFilters(), LINKS)
    heatmap = page_charts(html)["retention-chart"]["data"][0]
    cells = [value for row in heatmap["z"] for value in row if value is not None]
    assert heatmap["type"] == "heatmap" and cells and all(0 <= value <= 100 for value in cells)
    assert any(value is None for row in heatmap["z"] for value in row)  # unknown weeks: blank
    hover = next(text for row in heatmap["text"] for text in row if text)
    assert "% live of" in hover and "ST_006 Status:Churned" in hover
    assert "left blank (not 0)" in html and 'id="retention-table"' in html
    pro = page_charts(cohorts_page(cache, DashboardFilters(tier="PT_001"), LINKS))
    assert pro["retention-chart"]["data"][0]["z"] != heatmap["z"]


def test_the_flows_page_counts_every_move_of_the_period_and_narrows_to_a_rule(dashboard):
    # given the workspace's audit log
    _, cache = dashboard
    log = cache.frames().transitions
    # when the flows of the whole history are drawn
    html = flows_page(cache, DashboardFilters(), LINKS)
    sankey = page_charts(html)["flows-chart"]["data"][0]
    # then the Sankey's links carry every logged move, onboarding from "new"
    assert sankey["type"] == "sankey" and sum(sankey["link"]["value"]) == len(log)
    assert sankey["node"]["label"][0] == NEW
    assert f"{len(log)} move(s)" in html
    # and one rule's flows are that rule's moves only
    r01 = page_charts(flows_page(cache, DashboardFilters(), LINKS, rule="R01"))["flows-chart"]
    assert sum(r01["data"][0]["link"]["value"]) == int((log["rule_id"] == "R01").sum())
    assert r01["data"][0]["node"]["label"][0] == NEW  # R01 onboards
    # and a later period counts the moves of its days
    days = cache.frames().days
    later = flows_page(cache, DashboardFilters(start=days[1]), LINKS)
    moved = int((pd.to_datetime(log["as_of"]) >= pd.Timestamp(days[1])).sum())
    assert f"{moved} move(s) from {days[1]}" in later
    with pytest.raises(ValueError, match="unknown rule 'R77'"):
        flows_page(cache, DashboardFilters(), LINKS, rule="R77")
    empty = flows_page(cache, DashboardFilters(start=days[-1] + timedelta(days=1)), LINKS)
    assert 'id="no-moves"' in empty and "flows-chart" not in page_charts(empty)


def test_the_behaviour_filter_offers_the_tags_held_and_refuses_others(dashboard):
    _, cache = dashboard
    scores = cache.frames().latest_scores
    held = sorted({tag for text in scores["behaviour_tags"].dropna() for tag in text.split(",")})
    held = [tag for tag in held if tag]
    assert held, "the workspace's learners hold no behaviour tag"
    html = overview_page(cache, DashboardFilters(), LINKS)
    offered = re.findall(r'<option value="(BT_\d{3})"', html)
    assert offered == held
    # a tag's holders: the overview counts exactly them
    holders = scores["behaviour_tags"].fillna("").str.split(",").map(lambda tags: held[0] in tags)
    narrowed = overview_page(cache, DashboardFilters(behaviour=held[0]), LINKS)
    assert f"{int(holders.sum())} learner(s) selected" in narrowed
    absent = next(f"BT_{n:03d}" for n in range(1, 999) if f"BT_{n:03d}" not in held)
    for page in (overview_page, cohorts_page, flows_page):
        with pytest.raises(ValueError, match=absent):
            page(cache, DashboardFilters(behaviour=absent), LINKS)


def test_treated_and_control_are_the_kpis_split_drawn_where_it_exists(dashboard):
    # given the KPIs' inputs, when the trend is computed
    _, cache = dashboard
    frames = cache.frames()
    inputs = cache.kpi_inputs(frames)
    trend = kpi_trend(inputs, frames.customers, frames.days).set_index(["day", "id"])
    # then each day's treated and control are compute_kpis' own, NaN where it has none
    for day in frames.days:
        kpis = compute_kpis(
            inputs.transitions, inputs.scores, frames.customers, as_of=day,
            outcomes=inputs.outcomes, decisions=inputs.decisions,
        )  # fmt: skip
        for kpi in kpis:
            row = trend.loc[(pd.Timestamp(day), kpi.id)]
            for group in ("treated", "control"):
                expected = getattr(kpi, group)
                assert (expected is None and pd.isna(row[group])) or row[group] == expected
    split = trend.dropna(subset=["treated"]).index.get_level_values("id").unique().tolist()
    assert split == ["recovery_rate"]  # the one KPI compute_kpis splits here
    # and the overview draws those lines on that KPI's chart only, and says the others have none
    html = overview_page(cache, DashboardFilters(), LINKS)
    charts = page_charts(html)
    names = {chart_id: [t["name"] for t in chart["data"]] for chart_id, chart in charts.items()}
    assert {"treated", "control"} <= set(names["kpi-recovery_rate"])
    assert "treated" not in names["kpi-active_learner_rate"]
    assert html.count("not split by the control group") == 5


def test_the_static_export_writes_the_cohorts_and_flows_pages(dashboard, tmp_path):
    _, cache = dashboard
    names = {path.name for path in write_dashboard(cache, tmp_path, learners=1)}
    assert {"cohorts.html", "flows.html"} <= names
    flows = (tmp_path / "flows.html").read_text()
    assert 'href="cohorts.html"' in flows and "/dashboard" not in flows
    assert "retention-chart" in page_charts((tmp_path / "cohorts.html").read_text())


def test_before_any_batch_day_both_pages_say_so(tmp_path):
    from serving.core.problems import NotFound
    from serving.infra.store import StateStore

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", scores_dir=tmp_path / "scores")
    try:
        source = DashboardSource(
            store=store, customers_path=tmp_path / "none.parquet",
            events_path=tmp_path / "none.parquet", data_dir=tmp_path,
            ruleset=packaged_ruleset(None),
        )  # fmt: skip
        cache = DashboardCache(source, lambda: DASHBOARD_NOW)
        for page in (cohorts_page, flows_page):
            with pytest.raises(NotFound, match="no completed batch run"):
                page(cache, DashboardFilters(), LINKS)
    finally:
        store.close()
