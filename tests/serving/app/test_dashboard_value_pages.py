"""The value and model-health pages on the e2e workspace (three weekly batch days of the session's
log, the session's champion): what they show agrees with the figures computed straight from the
store, and each page says so when it has nothing to show (no campaign messages, no champion)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from rules.campaigns import Catalogue
from serving.app import dashboard_model_page
from serving.app.dashboard import DashboardCache, DashboardSource
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_model import brier_score, labelled_days, labelled_scores
from serving.app.dashboard_model_page import ChampionSource, calibration_section, model_page
from serving.app.dashboard_pages import Links
from serving.app.dashboard_value import campaign_roi, learner_roi
from serving.app.dashboard_value_export import write_value_and_model
from serving.app.dashboard_value_page import read_campaign_inputs, value_page
from serving.infra.store import StateStore
from serving.settings import Settings
from tests.serving.dashboard_helpers import page_charts
from tests.serving.fixtures import FIRST_DAY, packaged_ruleset, run_batch_day

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LINKS = Links("/dashboard")


def _cache(store, log, data_dir, ruleset) -> DashboardCache:
    source = DashboardSource(
        store=store, customers_path=log.customers_path, events_path=log.events_path,
        data_dir=data_dir, ruleset=ruleset,
    )  # fmt: skip
    return DashboardCache(source, lambda: NOW)


@pytest.fixture(scope="module")
def pages(tmp_path_factory, simulated_log, champion, champion_tracking_uri):
    from tests.e2e.workspace import build_workspace

    root = tmp_path_factory.mktemp("dashboard-value")
    workspace = build_workspace(root, simulated_log, champion, champion_tracking_uri)
    cache = _cache(
        workspace.store, workspace.log, workspace.settings.data_path, packaged_ruleset(champion)
    )
    yield workspace, cache, ChampionSource(workspace.settings)
    workspace.store.close()


def _table_rows(html: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]


def test_the_value_page_shows_each_campaigns_roi_as_computed_from_the_store(pages):
    # given the workspace's campaigns, when the value page is rendered for everyone
    _, cache, _ = pages
    html = value_page(cache, DashboardFilters(), LINKS)
    # then its ROI table holds campaign_roi of the store's outbox on the latest day, row for row
    frames = cache.frames()
    inputs = read_campaign_inputs(cache, frames)
    costs = cache.source.ruleset.campaigns.costs.by_channel()
    roi = campaign_roi(
        inputs.outbox, inputs.feedback, inputs.events, inputs.scores, frames.latest_day, costs
    )
    rows = _table_rows(html, "roi-table")
    assert [row[0] for row in rows] == roi["campaign_id"].tolist() and len(rows) > 0
    assert [int(row[1]) for row in rows] == roi["treated"].tolist()
    assert [int(row[2]) for row in rows] == roi["control"].tolist()
    for row, measured in zip(rows, roi["measured"], strict=True):
        assert (row[-1] == "not measured yet") == (not measured)
    # and the value chart is drawn; no message was dispatched, so nothing was spent or drawn
    charts = page_charts(html)
    assert "value-chart" in charts and "spend-chart" not in charts
    assert 'id="spend-note"' in html
    costs_shown = {row[0]: float(row[1]) for row in _table_rows(html, "cost-table")}
    assert costs_shown == costs


def test_the_scores_read_for_the_roi_give_the_roi_of_every_stored_score(pages):
    # given the workspace's inputs, the scores read only on the messaged learners' planned days
    _, cache, _ = pages
    frames = cache.frames()
    inputs = read_campaign_inputs(cache, frames)
    every = cache.source.store.scores_frame(columns=["as_of", "customer_id", "value_at_risk"])
    assert 0 < len(inputs.scores) < len(every)
    # when the ROI's learner rows are found from them and from every stored score
    costs = cache.source.ruleset.campaigns.costs.by_channel()

    def rows(scores):
        return learner_roi(
            inputs.outbox, inputs.feedback, inputs.events, scores, frames.latest_day, costs
        )

    # then they are the same rows, value at risk included
    pd.testing.assert_frame_equal(rows(inputs.scores), rows(every))
    assert rows(every)["value_at_risk"].sum() > 0


def test_a_filter_narrows_the_value_page_to_its_learners(pages):
    _, cache, _ = pages
    everyone = value_page(cache, DashboardFilters(), LINKS)
    pro = value_page(cache, DashboardFilters(tier="PT_001"), LINKS)
    tiers = {row[0] for row in _table_rows(pro, "value-table")}
    assert tiers == {"PT_001"}
    treated = sum(int(row[1]) for row in _table_rows(pro, "roi-table"))
    assert 0 < treated < sum(int(row[1]) for row in _table_rows(everyone, "roi-table"))


def test_without_campaign_messages_the_value_page_says_so_and_keeps_its_value_chart(
    tmp_path, simulated_log
):
    # given one batch day decided by rules without a campaign catalogue: no outbox message
    ruleset = packaged_ruleset(None).model_copy(update={"campaigns": Catalogue()})
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run_batch_day(FIRST_DAY, simulated_log, store, None, ruleset, run_id="r", data_dir=tmp_path)
        cache = _cache(store, simulated_log, tmp_path, ruleset)
        # when the value page is asked
        html = value_page(cache, DashboardFilters(), LINKS)
    # then it says there are no campaign results, draws the value chart and lists the costs
    assert "no campaign results yet" in html
    assert set(page_charts(html)) == {"value-chart"}
    assert [row[0] for row in _table_rows(html, "cost-table")] == list(
        ruleset.campaigns.costs.by_channel()
    )


def test_the_model_page_shows_the_card_recent_calibration_and_drift(pages):
    # given the workspace and its champion, when the model page is rendered
    workspace, cache, champions = pages
    html = model_page(cache, champions, LINKS)
    # then the card's metrics are there, and the Brier score is the labelled days' own
    assert 'id="metrics-table"' in html and 'id="operating-points"' in html
    frames = cache.frames()
    view = champions.current()
    last_event = workspace.log.events["ts"].max().date()
    log_end = min(frames.latest_day, last_event) + timedelta(days=1)
    days = labelled_days(frames.days, log_end, view.horizon_days)
    assert days, "the e2e workspace has a batch day whose label window closed"
    scores = workspace.store.scores_frame(columns=["as_of", "customer_id", "p_churn"])
    scores = scores[scores["as_of"].dt.date.isin(days)]
    labelled = labelled_scores(scores, workspace.log.events_path, view.horizon_days, log_end)
    assert f"Brier score <strong>{brier_score(labelled):.4f}</strong>" in html
    charts = page_charts(html)
    assert {"calibration-chart", "drift-chart"} == set(charts)
    counts = charts["calibration-chart"]["data"][0]["y"]
    assert sum(counts) == len(labelled)
    psi = charts["drift-chart"]["data"][0]["x"]
    assert psi == sorted(psi, reverse=True) and len(psi) == len(view.champion.model.feature_names)


def test_many_labelled_learner_days_are_calibrated_on_a_seeded_sample(pages, monkeypatch):
    # given more scored learner-days on the labelled days than the calibration labels
    _, cache, champions = pages
    frames, view = cache.frames(), champions.current()
    whole = calibration_section(cache, frames, view.horizon_days)
    assert whole["sampled"] is False and whole["rows"] > 40
    monkeypatch.setattr(dashboard_model_page, "CALIBRATION_SAMPLE", 40)
    # when the section is computed (twice)
    first = calibration_section(cache, frames, view.horizon_days)
    again = calibration_section(cache, frames, view.horizon_days)
    # then it labels a sample of at most 40 of them, says so, and the same one each time
    assert first["sampled"] is True and first["scored"] == whole["scored"]
    assert 0 < first["rows"] <= 40 and int(first["bins"]["learners"].sum()) == first["rows"]
    assert first["brier"] == again["brier"] and first["bins"].equals(again["bins"])
    # and the page says it is a sample of how many (computed again with that section)
    monkeypatch.setattr(dashboard_model_page, "calibration_section", lambda *_: first)
    frames.memo.clear()  # a page's figures are remembered per history
    html = model_page(cache, champions, LINKS)
    frames.memo.clear()
    assert f"(a seeded sample of the {whole['scored']} scored)" in html


def test_without_a_champion_the_model_page_says_so(pages, tmp_path):
    _, cache, _ = pages
    empty = ChampionSource(
        Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/m.db")
    )
    html = model_page(cache, empty, LINKS)
    assert 'id="no-champion"' in html and page_charts(html) == {}


def test_the_static_export_writes_both_pages_linked_side_by_side(pages, tmp_path):
    # given the workspace, when `lstep dashboard --out` writes the value and model pages
    _, cache, champions = pages
    written = write_value_and_model(cache, champions, tmp_path)
    # then both files are there, linked relatively and drawing with the plotly.js beside them
    assert [path.name for path in written] == ["value.html", "model.html"]
    for path in written:
        html = path.read_text(encoding="utf-8")
        assert 'href="index.html"' in html and 'src="plotly.min.js"' in html
        assert 'href="/dashboard' not in html
    assert 'id="filters"' not in written[0].read_text(encoding="utf-8")  # no server to filter
