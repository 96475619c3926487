"""Tests of serving/report.py: pieces on tiny hand-built frames, the page on a small workspace."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

from serving.report import (
    batch_snapshots,
    build_report,
    call_list,
    feature_drift,
    latest_report_html,
    learner_anchor,
    markdown_section,
    markdown_table,
    population_stability_index,
    report_path,
    tag_history,
    transitions_by_rule,
    write_report,
)
from serving.settings import Settings
from serving.store import StateStore


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


def test_call_list_keeps_p1_p2_outside_control_ordered_by_priority_then_value():
    # given scores of mixed priorities, one urgent learner in the control group
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "priority": ["P2", "P1", "P1", "P3", "P1"],
            "control": [False, False, False, False, True],
            "value_at_risk": [90.0, 10.0, 30.0, 99.0, 99.0],
        }
    )
    # when the call list of two is drawn
    listed = call_list(scores, top=2)
    # then P1 comes before P2, higher value first; P3 and the control learner never appear
    assert listed["customer_id"].tolist() == ["c", "b"]
    assert call_list(scores, top=10)["customer_id"].tolist() == ["c", "b", "a"]


def test_psi_is_zero_for_identical_samples_and_large_for_a_shifted_one():
    # given a sample, the same sample, and the sample shifted by two standard deviations
    values = pd.Series(np.random.default_rng(0).normal(size=2000), name="x")
    # when compared
    same = population_stability_index(values, values.copy())
    shifted = population_stability_index(values, values + 2.0)
    # then identical samples do not drift and the shifted one passes the warning threshold
    assert same == pytest.approx(0.0, abs=1e-12)
    assert shifted > 1.0


def test_psi_of_categories_matches_the_formula_and_counts_missing_values():
    # given a flag that is on for 20% of learners, then 50%, then going missing
    before = pd.Series([True] * 2 + [False] * 8, name="flag")
    after = pd.Series([True] * 5 + [False] * 5, name="flag")
    missing = pd.Series([True] * 2 + [False] * 4 + [None] * 4, dtype=object, name="flag")
    # when compared
    psi = population_stability_index(before, after)
    # then it is (0.5-0.2)ln(0.5/0.2) + (0.5-0.8)ln(0.5/0.8), and missing values are drift
    assert psi == pytest.approx(0.3 * np.log(2.5) - 0.3 * np.log(0.625))
    assert population_stability_index(before, missing) > 0.2


def test_psi_names_the_feature_when_a_sample_is_empty():
    with pytest.raises(ValueError, match="'sessions_7d'"):
        population_stability_index(pd.Series([], name="sessions_7d"), pd.Series([1.0]))


def test_feature_drift_flags_features_above_the_threshold_largest_first():
    # given two snapshots where one feature moved and another did not
    rng = np.random.default_rng(1)
    stable = rng.normal(size=500)
    first = pd.DataFrame({"sessions_7d": stable, "tenure_days": rng.normal(size=500)})
    last = pd.DataFrame({"sessions_7d": stable, "tenure_days": rng.normal(size=500) + 3})
    # when the drift is computed
    drift = feature_drift(first, last, ["sessions_7d", "tenure_days"])
    # then the moved feature leads with a warning and the other is stable
    assert drift["feature"].tolist() == ["tenure_days", "sessions_7d"]
    assert drift["warning"].tolist() == [True, False]
    with pytest.raises(ValueError, match="lacks columns \\['mrr'\\]"):
        feature_drift(first, last, ["mrr"])


def test_markdown_helpers_read_the_table_and_a_section():
    # given a card with a metrics table and a baselines section
    card = "# Card\n\n## Metrics\n| scorer | PR-AUC |\n| --- | --- |\n| model | 0.7 |\n\n"
    card += "## Baselines\n- **recency**: days since\n"
    # when parsed
    header, rows = markdown_table(card)
    # then the separator line is not a row and the section stops at the next heading
    assert (header, rows) == (["scorer", "PR-AUC"], [["model", "0.7"]])
    assert markdown_section(card, "Baselines") == "- **recency**: days since"
    with pytest.raises(ValueError, match="markdown table"):
        markdown_table("no table here")


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


def test_batch_snapshots_lists_days_up_to_the_report_day(tmp_path):
    # given snapshots on three days
    directory = tmp_path / "features"
    directory.mkdir()
    for day in ("2026-05-01", "2026-05-08", "2026-05-15"):
        (directory / f"as_of={day}.parquet").write_bytes(b"")
    # when listed until the second day, then the third is not used
    days = [day for day, _ in batch_snapshots(tmp_path, date(2026, 5, 8))]
    assert days == [date(2026, 5, 1), date(2026, 5, 8)]


def test_build_report_refuses_a_store_without_a_completed_run(tmp_path, simulated_log):
    # given an empty store
    settings = Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    log = simulated_log
    # when a report is asked for, then the error says what to run
    with (
        StateStore(settings.state_database_url) as store,
        pytest.raises(ValueError, match="no completed batch run on or before 2026-05-10"),
    ):
        build_report(store, settings, as_of=date(2026, 5, 10), champion=None,
                     events=log.events, customers=log.customers)  # fmt: skip


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
    path = write_report(ws.store, ws.settings, as_of=ws.last_day, champion=champion,
                        events=ws.log.events, customers=ws.log.customers)  # fmt: skip
    html = path.read_text(encoding="utf-8")
    # then it is the default dated file, with each section and the learners of the call list
    assert path == ws.settings.reports_path / f"report-{ws.last_day}.html"
    ids = set(re.findall(r'id="([^"]+)"', html))
    assert {"kpis", "tags-over-time", "transitions", "call-list", "model-card", "drift"} <= ids
    learners = [anchor for anchor in ids if anchor.startswith("learner-")]
    assert 1 <= len(learners) <= 10
    scores = ws.store.scores_frame(ws.last_day)
    assert {learner_anchor(c) for c in call_list(scores, 10)["customer_id"]} == set(learners)
    # and every image is an embedded PNG; no URL reaches out of the file
    sources = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert len(sources) == 3 + len(learners) and all(
        s.startswith("data:image/png;base64,") for s in sources
    )
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert html.count("<tr data-kpi=") == 6
    assert f"Champion v{champion.version}" in html and "recency" in html
    assert latest_report_html(ws.settings.reports_path) == html


def test_report_drift_compares_the_earliest_and_latest_snapshots(report_workspace, champion):
    # given the workspace's three snapshots
    ws = report_workspace
    # when the report is built on the second day, then drift compares days one and two only
    html = build_report(ws.store, ws.settings, as_of=date(2026, 5, 17), champion=champion,
                        events=ws.log.events, customers=ws.log.customers)  # fmt: skip
    assert "EARLIEST batch-day feature snapshot (2026-05-10" in html
    assert "LATEST (2026-05-17" in html
    assert html.count('class="badge ') == 8
    assert "3 completed batch day" not in html and "2 completed batch day" in html


def test_report_rules_only_uses_risk_indicators_and_says_there_is_no_model(tmp_path, simulated_log):
    # given a workspace scored by the rules alone
    from tests.e2e.workspace import build_workspace

    ws = build_workspace(tmp_path, simulated_log, None, f"sqlite:///{tmp_path / 'm.db'}")
    # when its report is built
    html = build_report(ws.store, ws.settings, as_of=ws.last_day, champion=None,
                        events=ws.log.events, customers=ws.log.customers)  # fmt: skip
    ws.store.close()
    # then no waterfall is drawn and the model card says there is no champion
    assert 'class="chart waterfall"' not in html
    assert "there is no model waterfall" in html
    assert "No champion model is registered" in html
