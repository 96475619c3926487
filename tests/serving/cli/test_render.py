"""The CLI's renderings: what a terminal shows of the library's results."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console

from features.validation_report import Problem, ValidationReport
from serving.app.status import LearnerStatus
from serving.app.summary import BatchResult
from serving.cli.render import (
    batch_summary,
    decision_lines,
    kpi_value,
    learner_status,
    validation_report,
)
from serving.core.frames import TRANSITIONS_SCHEMA

WHY = "no activity for 17 days; daily events -62% vs the 23 days before"


def _text(renderable) -> str:
    console = Console(record=True, width=250)
    console.print(renderable)
    return console.export_text()


def _status(history: list[dict], score: dict | None, override: dict | None) -> LearnerStatus:
    columns = [name for name in TRANSITIONS_SCHEMA.columns]
    return LearnerStatus(
        customer_id="C1",
        tag=history[-1]["to_tag"],
        tag_name="Risk:Declining",
        since=date(2026, 4, 2),
        override=override,
        history=pd.DataFrame([{name: row.get(name) for name in columns} for row in history]),
        score=score,
    )


def test_a_validation_report_renders_as_a_table_with_every_problem():
    # given a report with one note and one error
    note = Problem("events.csv", None, "2 exact duplicate rows dropped", 2, severity="note")
    error = Problem("events.csv", "channel", "1 row has a channel outside web", 1, ("'tv'",))
    report = ValidationReport((note, error), events_rows=10, customers_rows=3, duplicates_dropped=2)
    # when drawn with rich
    console = Console(record=True, width=200)
    console.print(validation_report(report))
    text = console.export_text()
    # then the summary leads and both problems appear, the error before the note
    assert text.splitlines()[0] == "input validation FAILED: 1 error, 1 note"
    assert "channel outside web; e.g. 'tv'" in text
    assert text.index("channel outside web") < text.index("exact duplicate rows dropped")


def test_kpi_values_carry_their_unit_and_a_dash_without_data():
    assert kpi_value(71.25, "%") == "71.2%"
    assert kpi_value(1234.5, "hours") == "1,234.5 hours"
    assert kpi_value(None, "%") == "-"


@pytest.mark.parametrize("over", [0, 62])
def test_the_batch_summary_says_how_many_learners_the_capacity_moved(over):
    # given a dry-run day whose capacity moved ``over`` urgent learners to automated outreach
    result = BatchResult(
        as_of=date(2026, 6, 30), run=None, dry_run=True, already_done=False, rules_only=True,
        model_version=None, to_call=150, over_capacity=over,
        overflow_priority="P3" if over else None,
    )  # fmt: skip
    console = Console(record=True, width=200)
    console.print(batch_summary(result))
    text = console.export_text()
    # then the summary counts them, and says nothing of the kind when none was moved
    line = "62 P1/P2 learners over capacity moved to automated outreach (P3); 150 left to contact"
    assert (line in text) == bool(over)
    assert ("over capacity" in text) == bool(over)


MOVE = {"as_of": "2026-04-02", "from_tag": "ST_001", "to_tag": "ST_004", "rule_id": "R04",
        "reason": "declining [no model score: decided on rules only]", "why": WHY,
        "signal": "rules", "run_id": "r2"}  # fmt: skip
SCORE = {"as_of": date(2026, 4, 3), "p_churn": 0.64, "confidence": 0.5, "priority": "P1",
         "action": "immediate CSM intervention", "control": False}  # fmt: skip


def test_status_shows_the_intervention_scores_signal_and_each_moves_why():
    # given a learner moved by R04 and scored the day after
    text = _text(learner_status(_status([MOVE], SCORE, None)))
    # then the lines say tag and data day, intervention, scores, signal, and no override
    assert "C1: ST_004 (Risk:Declining) since 2026-04-02 (data day)" in text
    assert (
        "priority P1, action immediate CSM intervention; p_churn 64%, confidence 50%; "
        "signal rules (scored 2026-04-03)"
    ) in text
    assert "open override: none" in text
    # and the move's description (brackets as text, not markup) and its why
    assert "declining [no model score: decided on rules only]" in text
    assert f"why: {WHY}" in text


@pytest.mark.parametrize(
    ("last", "signal"),
    [({}, "signal rules"), ({"to_tag": "ST_005", "rule_id": None, "actor": "kim",
                             "signal": None, "why": None}, "signal -")],
)  # fmt: skip
def test_the_signal_is_the_move_into_the_current_tag(last, signal):
    text = _text(learner_status(_status([{**MOVE, **last}], SCORE, None)))
    assert signal in text


def test_status_of_a_learner_never_scored_and_overridden_says_so():
    override = {"tag": "ST_004", "kind": "hold", "actor": "kim", "reason": "called",
                "effective_as_of": date(2026, 4, 3), "expires": date(2026, 5, 1)}  # fmt: skip
    text = _text(learner_status(_status([MOVE], None, override)))
    assert "not scored yet; signal rules" in text
    assert (
        "open override (hold): ST_004 by kim (called), data days from 2026-04-03 until 2026-05-01"
    ) in text


@pytest.mark.parametrize(("why", "shown"), [(WHY, True), (None, False)])
def test_explain_shows_the_rule_and_its_why_under_the_reasons(why, shown):
    record = {"current_tag": "ST_001", "proposed_tag": "ST_004", "why": why,
              "rule_description": "declining [x]",
              "risk_indicators": [{"feature": "risk_inactive_14d",
                                   "text": "no activity in the last 14 days"}]}  # fmt: skip
    text = _text(decision_lines(record))
    assert "rules: ST_001 -> ST_004: declining [x]" in text
    assert (f"why: {WHY}" in text) is shown
    assert "risk indicators on: no activity in the last 14 days" in text


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ({"behaviour_tags": "BT_002,BT_006"},
         "behaviour tags: BT_002 Usage:Mobile-Primary, BT_006 Content:Video-Preferred"),
        ({"behaviour_tags": ""}, "behaviour tags: none"),
        ({}, "behaviour tags: not stored"),  # a store from before the column
    ],
)  # fmt: skip
def test_status_shows_the_behaviour_tags_the_scores_table_keeps(stored, shown):
    text = _text(learner_status(_status([MOVE], SCORE | stored, None)))
    assert shown in text


def test_status_names_the_campaign_and_its_channel():
    score = SCORE | {"campaign_id": "CP_05", "channel": "csm_task"}
    text = _text(learner_status(_status([MOVE], score, None)))
    assert "action immediate CSM intervention; campaign CP_05 via csm_task; p_churn 64%" in text


def test_the_behaviour_names_shown_are_the_rules(ruleset):
    from serving.cli.render import BEHAVIOUR_NAMES

    assert {b.id: b.name for b in ruleset.behaviours} == BEHAVIOUR_NAMES


def test_the_campaigns_table_lists_every_campaign_with_its_cadence(ruleset):
    from serving.cli.render import campaigns_table

    text = _text(campaigns_table(ruleset))
    assert all(campaign_id in text for campaign_id in ruleset.campaigns.ids)
    assert "d0 email (BT_002: push), d3 push, d7 email" in text  # CP_09
    assert "A:0.5 B:0.5" in text
    # and which campaigns go to each learner on a day of their own (the digests)
    lines = text.splitlines()
    spread = {
        cid for cid in ruleset.campaigns.ids for line in lines if cid in line and "spread" in line
    }
    assert spread == {c.id for c in ruleset.campaigns.campaigns if c.spread} == {"CP_22", "CP_23"}
    # and says which first taggings fire a move's campaign
    assert "enrolled in the last 7 days (arrival_days)" in " ".join(text.split())
    unlimited = ruleset.campaigns.model_copy(update={"arrival_days": None})
    other = _text(campaigns_table(SimpleNamespace(campaigns=unlimited)))
    assert "(arrival_days: null)" in " ".join(other.split())


def test_explain_names_the_campaign_and_the_behaviour_tags():
    record = {"current_tag": "ST_001", "proposed_tag": "ST_004", "why": None,
              "rule_description": "declining", "risk_indicators": [],
              "campaign_id": "CP_13", "channel": "push", "behaviour_tags": ["BT_002"]}  # fmt: skip
    text = _text(decision_lines(record))
    assert "campaign: CP_13 via push" in text
    assert "behaviour tags: BT_002 Usage:Mobile-Primary" in text
    # a learner without a campaign says nothing of one
    assert "campaign:" not in _text(decision_lines(record | {"campaign_id": None}))
