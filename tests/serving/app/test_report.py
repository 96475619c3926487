"""The CS report (``serving.app.report``): pieces on tiny frames, the page on a small workspace."""

from __future__ import annotations

import re
from datetime import date
from html import escape

import pandas as pd
import pytest

from serving.app.report import (
    ReportInputs,
    build_report,
    latest_report_html,
    learner_anchor,
    report_path,
    tag_history,
    transitions_by_rule,
    write_report,
)
from serving.core.calllist import call_list
from serving.infra.store import StateStore
from serving.settings import Settings
from tests.serving.fixtures import packaged_ruleset


def _log(rows: list[tuple[str, str, str | None, str, str | None]]) -> pd.DataFrame:
    """An audit log from (customer_id, as_of, from_tag, to_tag, rule_id) in append order."""
    return pd.DataFrame(
        [
            {"id": index, "customer_id": c, "as_of": pd.Timestamp(d), "from_tag": f,
             "to_tag": t, "rule_id": r}
            for index, (c, d, f, t, r) in enumerate(rows, start=1)
        ]
    )  # fmt: skip


def test_tag_history_counts_each_learner_at_their_latest_tag_per_day():
    # given a learner moving ST_001 -> ST_004 on day two and another staying in ST_001
    log = _log(
        [
            ("a", "2026-05-01", None, "ST_001", "R01"),
            ("b", "2026-05-01", None, "ST_001", "R01"),
            ("a", "2026-05-02", "ST_001", "ST_004", "R11"),
        ]
    )
    # when the history is rebuilt on both days
    history = tag_history(log, [date(2026, 5, 2), date(2026, 5, 1)])
    # then day one has both in ST_001 and day two has one moved to ST_004, days in order
    assert history["day"].dt.date.tolist() == [date(2026, 5, 1), date(2026, 5, 2)]
    assert history[["ST_001", "ST_004"]].to_numpy().tolist() == [[2, 0], [1, 1]]
    assert (history.drop(columns="day").sum(axis=1) == 2).all()


def test_transitions_by_rule_counts_manual_moves_under_manual():
    # given two R01 moves and one override (no rule id)
    log = _log(
        [
            ("a", "2026-05-01", None, "ST_001", "R01"),
            ("b", "2026-05-01", None, "ST_001", "R01"),
            ("a", "2026-05-02", "ST_001", "ST_005", None),
        ]
    )
    # when counted
    counts = transitions_by_rule(log)
    # then the rule comes first and the person's move is counted as manual
    assert counts.to_dict() == {"R01": 2, "manual": 1}
    assert counts.index[0] == "R01"


def test_learner_anchor_keeps_ids_usable_in_a_url_fragment():
    assert learner_anchor("C0001") == "learner-C0001"
    assert learner_anchor("a b/c") == "learner-a_b_c"


def test_latest_report_html_picks_the_newest_dated_report(tmp_path):
    # given two dated reports and a file of another name
    report_path(tmp_path, date(2026, 5, 2)).write_text("second", encoding="utf-8")
    report_path(tmp_path, date(2026, 5, 1)).write_text("first", encoding="utf-8")
    (tmp_path / "report-latest.html").write_text("other", encoding="utf-8")
    # when the latest is read, then the newer date wins and other names are ignored
    assert latest_report_html(tmp_path) == "second"
    assert latest_report_html(tmp_path / "missing") is None


def test_latest_report_html_never_follows_a_link_out_of_the_folder(tmp_path):
    # given a real report and a newer-dated link to a file outside the reports folder
    secret = tmp_path / "outside.txt"
    secret.write_text("not a report", encoding="utf-8")
    reports = tmp_path / "reports"
    reports.mkdir()
    report_path(reports, date(2026, 5, 1)).write_text("the report", encoding="utf-8")
    report_path(reports, date(2099, 1, 1)).symlink_to(secret)
    # when the latest report is read, then the link is ignored
    assert latest_report_html(reports) == "the report"


def test_build_report_refuses_a_store_without_a_completed_run(tmp_path, simulated_log):
    # given an empty store
    settings = Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    log = simulated_log
    # when a report is asked for, then the error says what to run
    with (
        StateStore.from_settings(settings) as store,
        pytest.raises(ValueError, match="no completed batch run on or before 2026-05-10"),
    ):
        inputs = ReportInputs(None, packaged_ruleset(), log.events, log.customers)
        build_report(store, settings, as_of=date(2026, 5, 10), inputs=inputs)


@pytest.fixture(scope="module")
def report_workspace(tmp_path_factory, simulated_log, champion, champion_tracking_uri):
    from tests.e2e.workspace import build_workspace

    root = tmp_path_factory.mktemp("report-workspace")
    workspace = build_workspace(root, simulated_log, champion, champion_tracking_uri)
    yield workspace
    workspace.store.close()


def test_report_has_every_section_embeds_its_images_and_loads_nothing(report_workspace, champion):
    # given three batch days scored by the champion
    ws = report_workspace
    # when the report of the last day is written
    path = write_report(ws.store, ws.settings, as_of=ws.last_day, inputs=ws.inputs(champion))
    html = path.read_text(encoding="utf-8")
    # then it is the default dated file, with each section and the learners of the call list
    assert path == ws.settings.reports_path / f"report-{ws.last_day}.html"
    ids = set(re.findall(r'id="([^"]+)"', html))
    assert {"kpis", "tags-over-time", "transitions", "call-list", "model-card", "drift"} <= ids
    # and the campaigns the batch days planned, with their measured effect per campaign
    planned = ws.store.outbox_frame(until=ws.last_day)["campaign_id"].unique()
    assert len(planned) and "campaign-effect-table" in ids
    effect_rows = re.search(r'id="campaign-effect-table">(.*?)</table>', html, re.S).group(1)
    assert sorted(set(re.findall(r"<tr><td>(CP_\d+)</td>", effect_rows))) == sorted(planned)
    learners = [anchor for anchor in ids if anchor.startswith("learner-")]
    assert 1 <= len(learners) <= 10
    scores = ws.store.scores_frame(ws.last_day)
    listed = call_list(scores, 10)
    assert {learner_anchor(c) for c in listed["customer_id"]} == set(learners)
    # and the call list shows each learner's expected months and projected value, as stored
    table = re.search(r'id="call-table">(.*?)</table>', html, re.S).group(1)
    assert "<th>expected months</th><th>projected value</th>" in table
    first = listed.iloc[0]
    assert f'<td class="num">{first["expected_months"]:.1f}</td>' in table
    # and every image is an embedded PNG; no URL reaches out of the file
    sources = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert len(sources) == 3 + len(learners) and all(
        s.startswith("data:image/png;base64,") for s in sources
    )
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert html.count("<tr data-kpi=") == 6
    assert f"Champion v{champion.version}" in html and "recency" in html
    # and the early warning: N = 7/14/21 per scorer, the plain verdict, the named points
    early_rows = re.search(r'id="early-warning-table">(.*?)</table>', html, re.S).group(1)
    assert re.findall(r"<tr><td>model</td><td>(\d+)</td>", early_rows) == ["7", "14", "21"]
    assert "85% precision 14+ days ahead is" in html
    assert "@early_warning:" in html and "@recovered:" in html
    assert latest_report_html(ws.settings.reports_path) == html


def test_the_report_of_the_proved_files_is_the_report_of_the_validated_log(
    report_workspace, champion, tmp_path
):
    # given the workspace's log as its parquet files, read as lstep report reads them once
    # DuckDB proved them clean: lazily, each section the rows it needs
    from features.validation import valid_customers
    from serving.app.kpi_inputs import StoredEvents
    from serving.app.report import ReportInputs, _listed_features
    from tests.serving.fixtures import NOW

    ws = report_workspace
    log = StoredEvents(ws.log.events_path, NOW)
    customers = valid_customers(ws.log.customers_path, as_of_limit=NOW)
    lazy = ReportInputs(champion, packaged_ruleset(champion), log, customers)
    # when the report is built from them and from the validated frames
    from_files = build_report(ws.store, ws.settings, as_of=ws.last_day, inputs=lazy)
    from_frames = build_report(ws.store, ws.settings, as_of=ws.last_day, inputs=ws.inputs(champion))
    # then it is the same page, campaign effect and KPIs included
    assert "campaign-effect-table" in from_files and from_files == from_frames
    # and a day without a snapshot builds its call list's features from the file as from the
    # frames
    listed = call_list(ws.store.scores_frame(ws.last_day), 10)
    rebuilt = _listed_features(tmp_path, ws.last_day, listed, lazy)
    expected = _listed_features(tmp_path, ws.last_day, listed, ws.inputs(champion))
    assert len(rebuilt) == len(listed)
    pd.testing.assert_frame_equal(rebuilt, expected)


def test_report_drift_compares_the_earliest_and_latest_snapshots(report_workspace, champion):
    # given the workspace's three snapshots
    ws = report_workspace
    # when the report is built on the second day, then drift compares days one and two only
    html = build_report(ws.store, ws.settings, as_of=date(2026, 5, 17), inputs=ws.inputs(champion))
    assert "EARLIEST batch-day feature snapshot (2026-05-10" in html
    assert "LATEST (2026-05-17" in html
    assert html.count('class="badge ') == 8
    assert "3 completed batch day" not in html and "2 completed batch day" in html


def test_report_rules_only_uses_risk_indicators_and_says_there_is_no_model(tmp_path, simulated_log):
    # given a workspace scored by the rules alone
    from tests.e2e.workspace import build_workspace

    ws = build_workspace(tmp_path, simulated_log, None, f"sqlite:///{tmp_path / 'm.db'}")
    # when its report is built
    html = build_report(ws.store, ws.settings, as_of=ws.last_day, inputs=ws.inputs(None))
    ws.store.close()
    # then no waterfall is drawn and the model card says there is no champion
    assert 'class="chart waterfall"' not in html
    assert "there is no model waterfall" in html
    assert "No champion model is registered" in html


def test_the_call_list_says_which_rule_put_each_learner_in_their_tag_and_why(
    report_workspace, champion
):
    # given three batch days scored by the champion
    ws = report_workspace
    # when the report of the last day is built
    html = build_report(ws.store, ws.settings, as_of=ws.last_day, inputs=ws.inputs(champion))
    # then each listed learner whose last move a rule made quotes that move's words from the log
    listed = call_list(ws.store.scores_frame(ws.last_day), 10)["customer_id"].tolist()
    quoted = 0
    for customer_id in listed:
        history = ws.store.history(customer_id)
        last = history[history["as_of"] <= pd.Timestamp(ws.last_day)].iloc[-1]
        section = html.split(f'id="{learner_anchor(customer_id)}"')[1].split("</article>")[0]
        assert f"In {last['to_tag']} since" in section
        if not pd.isna(last["why"]):
            assert f"Why: {escape(last['why'])}." in section
            quoted += 1
    assert quoted > 0


def test_the_campaigns_section_counts_decisions_by_campaign_and_channel():
    from serving.app.report import campaigns_section

    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "campaign_id": ["CP_09", "CP_09", "CP_09", None, "CP_05"],
            "channel": ["email", "push", "email", None, "csm_task"],
            "control": [False, False, True, False, False],
        }
    )
    section = campaigns_section(scores)
    assert section["stored"] and section["none"] == 1
    assert section["rows"] == [
        {"campaign_id": "CP_05", "channel": "csm_task", "decisions": 1, "control": 0},
        {"campaign_id": "CP_09", "channel": "email", "decisions": 2, "control": 1},
        {"campaign_id": "CP_09", "channel": "push", "decisions": 1, "control": 0},
    ]


def test_a_store_without_campaign_columns_says_so():
    from serving.app.report import campaigns_section

    section = campaigns_section(pd.DataFrame({"customer_id": ["a"], "control": [False]}))
    assert section == {"stored": False, "rows": [], "none": 0}


def test_the_effect_section_shows_a_missing_number_as_a_dash():
    from serving.app.report import effect_section

    # given an effect summary whose control rate is unknown (no control learner yet)
    summary = pd.DataFrame({"Campaign": ["CP_01"], "Control %": [float("nan")], "p": [0.04]})
    # when it becomes the report's table
    section = effect_section(summary)
    # then the header is kept and the unknown number reads as a dash
    assert section == {"header": ["Campaign", "Control %", "p"], "rows": [["CP_01", "-", "0.04"]]}
