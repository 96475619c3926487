"""The dashboard's learner page: the waterfall's numbers, the campaigns table, the reasons of a
stored score (the words ``/explain`` gives), the deadline, and the page itself (live and static)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from models.explain import Explanation, Reason, explain_frame
from rules.campaigns import Catalogue
from serving.app.dashboard import DashboardCache, DashboardSource
from serving.app.dashboard_learner import (
    OUTBOX_COLUMNS,
    campaign_rows,
    history_chart,
    learner_page,
    override_rows,
)
from serving.app.dashboard_pages import Links, write_dashboard
from serving.app.dashboard_why import (
    NoReasons,
    ReasonSource,
    explain_one,
    snapshot_row,
    waterfall_chart,
    waterfall_steps,
    why_of,
)
from serving.core.assess import assess
from serving.core.problems import NotFound
from tests.serving.dashboard_helpers import page_charts
from tests.serving.fixtures import packaged_ruleset

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _reason(feature: str, points: float) -> Reason:
    return Reason(
        feature=feature, value=1.0, points=points, text=f"{feature}: 1: {points:+.0f} pts"
    )


# A base rate of 20%, a raw probability of 50%: the four features' points add up to +30, largest
# |points| first, as explain_frame orders them; calibration takes the 50% to 42%.
TINY = Explanation(
    customer_id="L1",
    p_base=0.20,
    p_raw=0.50,
    reasons=(_reason("a", 20.0), _reason("b", 15.0), _reason("c", -8.0), _reason("d", 3.0)),
)


def test_the_waterfall_adds_up_from_the_base_rate_to_the_raw_probability_and_p_churn():
    # given a tiny explanation, two reasons drawn on their own and a calibrated score of 42%
    why = why_of(TINY, 0.42, top=2)
    # when its waterfall is laid out
    steps = waterfall_steps(why)
    # then the bars are the base rate, the two reasons, the other two together (-8 + 3 = -5),
    # the raw probability, calibration (42 - 50 = -8) and p_churn, in points
    assert steps["label"].tolist() == [
        "base rate", "a", "b", "2 other features", "raw model probability", "calibration",
        "p_churn",
    ]  # fmt: skip
    assert steps["measure"].tolist() == [
        "absolute", "relative", "relative", "relative", "total", "relative", "total",
    ]  # fmt: skip
    assert steps["value"].tolist() == pytest.approx([20.0, 20.0, 15.0, -5.0, 50.0, -8.0, 42.0])
    # and each total is the running sum of the bars before it
    values = steps["value"].to_numpy()
    assert values[:4].sum() == pytest.approx(values[4]) == pytest.approx(100 * TINY.p_raw)
    assert values[4] + values[5] == pytest.approx(values[6]) == pytest.approx(42.0)


def test_the_waterfall_chart_is_a_horizontal_plotly_waterfall_of_those_steps():
    chart = waterfall_chart(why_of(TINY, 0.42, top=2))
    (trace,) = chart["data"]
    assert (trace["type"], trace["orientation"]) == ("waterfall", "h")
    assert trace["x"] == pytest.approx([20.0, 20.0, 15.0, -5.0, 50.0, -8.0, 42.0])
    assert trace["hovertext"][1] == "a: 1: +20 pts"  # the reason's own words on hover
    assert chart["layout"]["yaxis"]["autorange"] == "reversed"  # base rate on top


def test_every_reason_is_drawn_when_top_covers_them_all():
    why = why_of(TINY, 0.5, top=10)
    steps = waterfall_steps(why)
    assert (why.rest_count, why.rest_points) == (0, 0.0)
    assert "other features" not in " ".join(steps["label"])
    assert steps["value"].tolist() == pytest.approx([20.0, 20.0, 15.0, -8.0, 3.0, 50.0, 0.0, 50.0])


def _outbox(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(OUTBOX_COLUMNS))
    for name in ("planned_on", "due_on"):
        frame[name] = pd.to_datetime(frame[name]).astype("datetime64[us]")
    frame["sent_at"] = pd.to_datetime(frame["sent_at"], utc=True)
    return frame


def test_the_campaigns_table_names_states_and_marks_the_control_group():
    # given a learner's four messages: a welcome sent and its second step cancelled, a
    # retention message kept for the control group, and a campaign the catalogue no longer has
    outbox = _outbox([
        ("m1", "CP_01", "email", 0, "2026-05-01", "2026-05-01", "sent", "", False,
         "2026-05-01T09:00:00Z"),
        ("m2", "CP_01", "in_app", 1, "2026-05-01", "2026-05-03", "cancelled", "", False, None),
        ("m3", "CP_21", "email", 0, "2026-05-03", "2026-05-03", "suppressed", "B", True, None),
        ("m4", "CP_99", "push", 0, "2026-04-20", "2026-04-22", "pending", "A", False, None),
    ])  # fmt: skip
    # when the page lists them
    rows = campaign_rows(outbox, packaged_ruleset(None).campaigns)
    # then the latest planned come first, steps count from 1, states are in words
    assert rows["campaign_id"].tolist() == ["CP_21", "CP_01", "CP_01", "CP_99"]
    assert rows["campaign"].tolist()[1] == "Welcome"
    assert rows["campaign"].tolist()[3] == "CP_99"  # unknown to the catalogue: its id
    assert rows["step"].tolist() == [1, 1, 2, 1]
    assert rows["state"].tolist() == [
        "control: recorded, never sent", "sent", "cancelled", "planned",
    ]  # fmt: skip
    assert rows["control"].tolist() == ["yes", "no", "no", "no"]
    assert rows["variant"].tolist() == ["B", "—", "—", "A"]
    assert rows["planned"].tolist() == ["2026-05-03", "2026-05-01", "2026-05-01", "2026-04-20"]
    assert rows["sent"].tolist() == ["—", "2026-05-01", "—", "—"]


def test_no_messages_is_an_empty_table():
    assert campaign_rows(_outbox([]), Catalogue()).empty


def test_overrides_read_as_data_days_and_a_clear_names_who():
    overrides = pd.DataFrame(
        {
            "tag": ["ST_005", "ST_001"], "kind": ["campaign", "hold"], "actor": ["ana", "bo"],
            "reason": ["called", "on leave"],
            "effective_as_of": pd.to_datetime(["2026-05-21", "2026-05-02"]),
            "expires": pd.to_datetime(["2026-06-18", None]),
            "cleared_as_of": pd.to_datetime([None, "2026-05-10"]),
            "cleared_by": [None, "cy"],
        }
    )  # fmt: skip
    rows = override_rows(overrides)
    assert rows["from"].tolist() == ["2026-05-21", "2026-05-02"]
    assert rows["expires"].tolist() == ["2026-06-18", "—"]
    assert rows["cleared"].tolist() == ["—", "2026-05-10 cy"]


def test_a_lone_move_is_drawn_in_a_week_around_it_and_tags_on_their_axis():
    history = pd.DataFrame({"as_of": pd.to_datetime(["2026-05-19"]), "to_tag": ["ST_004"]})
    chart = history_chart(history)
    assert chart["layout"]["xaxis"]["range"] == ["2026-05-16", "2026-05-22"]
    assert chart["data"][0]["y"] == [3]  # ST_004 is the fourth tick
    two = pd.DataFrame(
        {"as_of": pd.to_datetime(["2026-05-19", "2026-05-21"]), "to_tag": ["ST_004", "ST_001"]}
    )
    assert "range" not in history_chart(two)["layout"]["xaxis"]


# --- on a workspace the batch scored with the session's champion --------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory, simulated_log, champion_tracking_uri, champion):
    from tests.e2e.workspace import build_workspace

    root = tmp_path_factory.mktemp("dashboard-learner")
    workspace = build_workspace(root, simulated_log, champion, champion_tracking_uri)
    yield workspace, champion
    workspace.store.close()


def _listed(workspace) -> tuple[str, dict]:
    """The latest day's riskiest learner and their stored score."""
    scores = workspace.store.scores_frame(workspace.last_day)
    top = scores.sort_values(["p_churn", "customer_id"], ascending=[False, True]).iloc[0]
    return str(top["customer_id"]), top.to_dict()


def _model_for(champion):
    def model_for(version: str):
        if version != champion.version:
            raise NoReasons(f"no reasons: version {version} is not the champion")
        return champion.model

    return model_for


def test_reasons_of_a_stored_score_are_the_words_explain_gives_and_add_up(scored):
    # given the riskiest learner of the latest batch day and the version that scored them
    workspace, champion = scored
    customer_id, score = _listed(workspace)
    source = ReasonSource(workspace.settings.data_path, _model_for(champion), deadline_s=None)
    # when the page asks why
    why = source.why(customer_id, score)
    # then the reasons are /explain's (assess on the same snapshot row), top eight of them
    row = snapshot_row(workspace.settings.data_path, workspace.last_day, customer_id)
    explained = assess(
        row, champion=champion, ruleset=packaged_ruleset(champion),
        state=workspace.store.state_frame(workspace.last_day, customer_ids=[customer_id]),
        as_of=workspace.last_day,
    ).explanation(0)  # fmt: skip
    assert why.note is None and (why.as_of, why.version) == (workspace.last_day, champion.version)
    assert [r.text for r in why.reasons] == [r.text for r in explained.top(8)]
    # and the base rate plus every feature's points is the raw probability, the stored p_churn
    # its calibrated value
    points = sum(r.points for r in why.reasons) + why.rest_points
    assert why.p_base + points / 100 == pytest.approx(why.p_raw, abs=1e-9)
    assert why.p_churn == score["p_churn"]
    steps = waterfall_steps(why)
    assert steps["value"].iloc[-1] == pytest.approx(100 * score["p_churn"])


def test_a_slow_model_shows_a_note_by_the_deadline_and_the_reasons_once_ready(scored):
    # given a model that takes longer than the page waits
    workspace, champion = scored
    customer_id, score = _listed(workspace)
    release = threading.Event()

    def slow(version: str):
        release.wait(10)
        return champion.model

    source = ReasonSource(workspace.settings.data_path, slow, deadline_s=0.05)
    # when the page asks before the model answers, it says so and does not wait
    early = source.why(customer_id, score)
    assert early.note is not None and "not ready within 0.05 s" in early.note
    assert early.reasons == ()
    # then once the explanation finished, the next ask shows it
    release.set()
    source._running[(customer_id, workspace.last_day, str(score["model_version"]))].result(10)
    assert source.why(customer_id, score).note is None


def test_no_champion_rules_only_and_no_score_say_why_there_are_no_reasons(scored):
    workspace, _ = scored
    customer_id, score = _listed(workspace)

    def none(version: str):
        raise NoReasons("no reasons: no champion")

    source = ReasonSource(workspace.settings.data_path, none, deadline_s=None)
    assert source.why(customer_id, score).note == "no reasons: no champion"
    assert source.why(customer_id, None).note == "no reasons: no batch scored this learner yet"
    rules_only = source.why(customer_id, score | {"model_version": None})
    assert "rules alone" in rules_only.note


def test_the_learner_page_shows_reasons_waterfall_campaigns_and_the_form(scored):
    # given a learner who was sent campaign messages
    workspace, champion = scored
    outbox = workspace.store.outbox_frame(columns=["customer_id", "campaign_id"])
    assert not outbox.empty, "the batch days planned no campaign message"
    customer_id = str(outbox["customer_id"].iloc[0])
    source = ReasonSource(workspace.settings.data_path, _model_for(champion), deadline_s=None)
    catalogue = packaged_ruleset(champion).campaigns
    # when the live page is built
    html = learner_page(
        workspace.store, customer_id, Links("/dashboard"), catalogue=catalogue,
        reasons=source, override_url="/override",
    )  # fmt: skip
    # then it draws the waterfall and the history, lists the reasons and the campaigns
    assert {"waterfall-chart", "history-chart"} <= set(page_charts(html))
    assert 'id="reasons"' in html
    mine = outbox[outbox["customer_id"] == customer_id]["campaign_id"]
    for campaign_id in set(mine):
        assert f"<td>{campaign_id} {catalogue.get(campaign_id).name}</td>" in html
    # and the form posts to the service's endpoint, with no token in the page
    assert 'id="override-form"' in html and '"/override"' in html
    assert '"Bearer " + form.token.value' in html
    assert not re.search(r"document\.cookie|localStorage|sessionStorage", html)


class _WithoutMessages:
    """The store, its outbox emptied: every learner of the batch days was messaged."""

    def __init__(self, store) -> None:
        self.store = store

    def outbox_frame(self, **query):
        return self.store.outbox_frame(**query).iloc[0:0]

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def test_a_learner_without_messages_reads_none_and_an_unknown_one_is_not_found(scored):
    workspace, _ = scored
    customer_id, _ = _listed(workspace)
    html = learner_page(_WithoutMessages(workspace.store), customer_id, Links("/dashboard"))
    assert "No campaign messages: none." in html and "campaign-messages" not in html
    assert "no reasons: no champion to explain with" in html  # no reason source given
    assert "waterfall-chart" not in page_charts(html)
    with pytest.raises(NotFound, match="nobody"):
        learner_page(workspace.store, "nobody", Links("/dashboard"))


def test_the_static_export_has_reasons_but_no_override_form(scored, tmp_path):
    workspace, champion = scored
    source = DashboardSource(
        store=workspace.store, customers_path=workspace.log.customers_path,
        events_path=workspace.log.events_path, data_dir=workspace.settings.data_path,
        ruleset=packaged_ruleset(champion),
    )  # fmt: skip
    reasons = ReasonSource(workspace.settings.data_path, _model_for(champion), deadline_s=None)
    written = write_dashboard(DashboardCache(source, lambda: NOW), tmp_path, learners=2,
                              reasons=reasons)  # fmt: skip
    pages = [path for path in written if path.name.startswith("learner-")]
    assert len(pages) == 2
    for page in pages:
        html = page.read_text()
        assert "override-form" not in html and 'id="override-static"' in html
        assert "waterfall-chart" in page_charts(html)


def test_a_snapshot_row_keeps_the_batch_dtypes_and_a_missing_day_is_empty(scored):
    workspace, _ = scored
    customer_id, _ = _listed(workspace)
    row = snapshot_row(workspace.settings.data_path, workspace.last_day, customer_id)
    whole = pd.read_parquet(
        workspace.settings.data_path / "features" / f"as_of={workspace.last_day}.parquet"
    )
    assert row["customer_id"].tolist() == [customer_id]
    assert row.dtypes.equals(whole.dtypes)
    assert snapshot_row(workspace.settings.data_path, date(2001, 1, 1), customer_id).empty


def test_explain_one_is_explain_frame_without_its_pandera_pass(scored):
    workspace, champion = scored
    customer_id, _ = _listed(workspace)
    row = snapshot_row(workspace.settings.data_path, workspace.last_day, customer_id)
    fast, full = explain_one(champion.model, row), explain_frame(champion.model, row)[0]
    assert (fast.p_base, fast.p_raw) == pytest.approx((full.p_base, full.p_raw), abs=1e-12)
    assert [r.text for r in fast.reasons] == [r.text for r in full.reasons]
    assert [r.points for r in fast.reasons] == pytest.approx([r.points for r in full.reasons])


def test_the_services_answers_give_the_row_and_the_same_reasons_as_the_snapshot(scored):
    # given the day's answers the service keeps (built in memory from the day's snapshot)
    from types import SimpleNamespace

    from serving.api.dashboard import served_row, share_champion
    from serving.app.answers import DayAnswers

    workspace, champion = scored
    customer_id, score = _listed(workspace)
    day = workspace.last_day
    snapshot = pd.read_parquet(workspace.settings.data_path / "features" / f"as_of={day}.parquet")
    answers = DayAnswers.build(
        snapshot, champion=champion, ruleset=packaged_ruleset(champion),
        state=workspace.store.state_frame(day), as_of=day,
    )  # fmt: skip
    share_champion(champion, SimpleNamespace(current=answers))
    try:
        # when the page's rows come from them: the learner's row on that day, none on another
        assert served_row(day, customer_id)["customer_id"].tolist() == [customer_id]
        assert served_row(date(2001, 1, 1), customer_id) is None
        assert served_row(day, "nobody") is None
        by_answers = ReasonSource(
            workspace.settings.data_path, _model_for(champion), deadline_s=None, rows=served_row
        ).why(customer_id, score)
    finally:
        share_champion(None, None)
    # then the reasons are those of the snapshot's row
    by_snapshot = ReasonSource(
        workspace.settings.data_path, _model_for(champion), deadline_s=None
    ).why(customer_id, score)
    assert [r.text for r in by_answers.reasons] == [r.text for r in by_snapshot.reasons]
    assert by_answers.p_raw == pytest.approx(by_snapshot.p_raw, abs=1e-12)
