"""KPIs on a hand-built audit log; each expected value is worked out by hand beside its check.

Every KPI counts data days (``as_of``); the wall clock (``created_at``) must never change one.
"""

from __future__ import annotations

from datetime import UTC, date

import pandas as pd
import pytest

from rules.conditions import parse_condition
from rules.config import Rule
from serving.app.kpis import SCORE_COLUMNS, Kpi, compute_kpis
from serving.app.qualifying import DecisionDays
from tests.serving.batches import FIRST_DAY, apply
from tests.serving.fixtures import packaged_ruleset

AS_OF = date(2024, 6, 30)

# customer, as_of, from_tag, to_tag, rule id or "person", created_at (UTC)
HISTORY = [
    ("a", "2024-03-02", None, "ST_001", "R01", "2024-03-02 01:00"),
    ("a", "2024-03-12", "ST_001", "ST_002", "R03", "2024-03-12 01:00"),
    ("a", "2024-04-20", "ST_002", "ST_003", "R05", "2024-04-20 01:00"),
    ("b", "2024-03-02", None, "ST_001", "R01", "2024-03-02 01:00"),
    ("b", "2024-03-20", "ST_001", "ST_004", "R08", "2024-03-20 02:00"),
    ("b", "2024-03-22", "ST_004", "ST_005", "person", "2024-03-22 10:00"),
    ("b", "2024-04-10", "ST_005", "ST_001", "R11", "2024-04-10 01:00"),
    ("b", "2024-04-30", "ST_001", "ST_002", "R03", "2024-04-30 01:00"),
    ("c", "2024-04-16", None, "ST_001", "R01", "2024-04-16 01:00"),
    ("c", "2024-05-01", "ST_001", "ST_004", "R09", "2024-05-01 08:00"),
    ("c", "2024-05-31", "ST_004", "ST_006", "R15", "2024-05-31 01:00"),
    ("d", "2024-06-02", None, "ST_001", "R01", "2024-06-02 01:00"),
    ("d", "2024-06-10", "ST_001", "ST_004", "R08", "2024-06-11 06:00"),
    ("d", "2024-06-12", "ST_004", "ST_001", "person", "2024-06-12 09:00"),
    ("e", "2024-02-02", None, "ST_001", "R01", "2024-02-02 01:00"),
    ("e", "2024-02-09", "ST_001", "ST_002", "R03", "2024-02-09 01:00"),
    ("e", "2024-03-01", "ST_002", "ST_003", "R05", "2024-03-01 01:00"),
    ("f", "2024-06-25", None, "ST_001", "R01", "2024-06-25 01:00"),
    ("g", "2024-07-02", None, "ST_001", "R01", "2024-07-02 01:00"),
    ("h", "2024-01-02", None, "ST_001", "R01", "2024-01-02 01:00"),
    ("h", "2024-01-20", "ST_001", "ST_002", "R03", "2024-01-20 01:00"),
    ("h", "2024-03-15", "ST_002", "ST_003", "R05", "2024-03-15 01:00"),
    ("h", "2024-03-25", "ST_003", "ST_002", "person", "2024-03-25 11:00"),
    ("i", "2024-05-11", None, "ST_001", "R01", "2024-05-11 01:00"),
    ("i", "2024-06-28", "ST_001", "ST_004", "R08", "2024-06-28 01:00"),
]
ENROLLED = {
    "a": "2024-03-01",
    "b": "2024-03-01",
    "c": "2024-04-15",
    "d": "2024-06-01",
    "e": "2024-02-01",
    "f": "2024-06-20",
    "g": "2024-07-01",
    "h": "2024-01-01",
    "i": "2024-05-10",
}
# customer, as_of, control: the days risk episodes began, plus one decoy day for d
CONTROL_FLAGS = [
    ("b", "2024-03-20", False),
    ("c", "2024-05-01", True),
    ("d", "2024-06-10", False),
    ("d", "2024-06-11", True),
    ("i", "2024-06-28", True),
]


def transitions_frame(history) -> pd.DataFrame:
    """The audit log of ``history``, ids in order of creation as the store assigns them."""
    rows = pd.DataFrame(
        history, columns=["customer_id", "as_of", "from_tag", "to_tag", "who", "created_at"]
    )
    rows["created_at"] = pd.to_datetime(rows["created_at"]).dt.tz_localize(UTC)
    rows = rows.sort_values("created_at", kind="stable").reset_index(drop=True)
    manual = rows["who"] == "person"
    return pd.DataFrame(
        {
            "id": range(1, len(rows) + 1),
            "customer_id": rows["customer_id"],
            "as_of": pd.to_datetime(rows["as_of"]),
            "from_tag": rows["from_tag"],
            "to_tag": rows["to_tag"],
            "rule_id": rows["who"].where(~manual),
            "actor": rows["who"].where(manual, None).replace("person", "kim"),
            "reason": "because",
            "signal": None,
            "p_churn": 0.5,
            "confidence": 0.8,
            "model_version": "v1",
            "run_id": rows["as_of"].where(~manual),
            "created_at": rows["created_at"],
        }
    )


def scores_frame(flags) -> pd.DataFrame:
    """Score rows carrying only what the KPIs read: the control flag of a learner on a day."""
    rows = pd.DataFrame(flags, columns=["customer_id", "as_of", "control"])
    return rows.assign(
        as_of=pd.to_datetime(rows["as_of"]),
        p_churn=0.5,
        p_low=0.4,
        p_high=0.6,
        confidence=0.8,
        priority="P1",
        action="call",
        value_at_risk=1.0,
        model_version="v1",
        run_id="r",
    )


def customers_frame(enrolled: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(enrolled),
            "product_tag": "PT_001",
            "enrolled_at": pd.to_datetime(list(enrolled.values())).tz_localize(UTC),
            "mrr": 30.0,
        }
    )


def labels_frame(labels) -> pd.DataFrame:
    rows = pd.DataFrame(labels, columns=["customer_id", "as_of", "churned"])
    return rows.assign(as_of=pd.to_datetime(rows["as_of"]))


def kpis_by_id(
    outcomes: pd.DataFrame | None = None,
    history=HISTORY,
    decisions: DecisionDays | None = None,
    as_of: date = AS_OF,
) -> dict[str, Kpi]:
    kpis = compute_kpis(
        transitions_frame(history),
        scores_frame(CONTROL_FLAGS),
        customers_frame(ENROLLED),
        as_of=as_of,
        outcomes=outcomes,
        decisions=decisions,
    )
    return {kpi.id: kpi for kpi in kpis}


def test_six_kpis_come_back_in_the_documented_order_each_with_a_definition():
    # Given the hand-built history / When the KPIs are computed / Then all six come back
    kpis = kpis_by_id()
    assert list(kpis) == [
        "active_learner_rate",
        "progression_velocity",
        "mastery_60d",
        "risk_detection_days",
        "recovery_rate",
        "automation_accuracy",
    ]
    # And each carries its own one-line definition
    definitions = [kpi.definition for kpi in kpis.values()]
    assert len(set(definitions)) == 6
    assert all(definition and "\n" not in definition for definition in definitions)


def test_active_learner_rate_counts_live_learners_known_at_as_of():
    # Given latest tags at June 30: a ST_003, b ST_002, c ST_006 (not live), d ST_001, e ST_003,
    # f ST_001, h ST_002 (set by a person), i ST_004; g only appears on July 2
    kpi = kpis_by_id()["active_learner_rate"]
    # Then 4 (b, d, f, h) of the 7 live learners (a, b, d, e, f, h, i) are active: below 70 %
    assert kpi.value == pytest.approx(100 * 4 / 7)
    assert (kpi.target, kpi.comparison, kpi.unit, kpi.meets_target) == (70.0, ">=", "%", False)


def test_mastery_counts_only_learners_whose_first_60_days_are_in_the_history():
    # Given the history starting on January 2 and the cohort enrolled from January 1 to May 1:
    # a, b, c, e, h; a mastered after 50 days, e after 29, h after 74 (too late), b and c never
    kpi = kpis_by_id()["mastery_60d"]
    # Then 2 of 5 reached ST_003 within 60 days: 40 %, exactly on target
    assert kpi.value == pytest.approx(100 * 2 / 5)
    assert kpi.meets_target is True
    assert "2 of 5" in kpi.detail


def test_mastery_without_60_days_of_history_says_when_it_becomes_measurable():
    # Given a history that starts on June 1 (everyone before was onboarded then), and learners
    # enrolled on May 1 (before the history) and June 5 (within it)
    history = [
        ("a", "2024-06-01", None, "ST_003", "R12", "2024-06-01 01:00"),
        ("b", "2024-06-06", None, "ST_001", "R01", "2024-06-06 01:00"),
    ]
    kpis = compute_kpis(
        transitions_frame(history),
        scores_frame([]),
        customers_frame({"a": "2024-05-01", "b": "2024-06-05"}),
        as_of=AS_OF,
    )
    kpi = {kpi.id: kpi for kpi in kpis}["mastery_60d"]
    # Then there is no value (a's ST_003 on the first day is no evidence of 60-day mastery), and
    # it becomes measurable 60 days after b enrolled: August 4
    assert kpi.value is None and kpi.meets_target is None
    assert kpi.detail.startswith("not enough history: measurable from 2024-08-04")


# --- detection speed and velocity: from the first qualifying day ----------------------------------

DAYS = pd.date_range("2024-06-01", "2024-06-10")


def decision_days(qualifying: dict[str, tuple[set[int], set[int]]], ruleset=None) -> DecisionDays:
    """Inputs of June 1-10: per learner, the days (of June) they meet a risk / progress condition.

    A risk day has every risk indicator on and a certain churn score; a progress day has ten
    milestones, one of them recent; every other day has none of it.
    """
    rows = []
    for customer_id, (risk_days, progress_days) in qualifying.items():
        for day in DAYS:
            at_risk, progressing = day.day in risk_days, day.day in progress_days
            rows.append(
                {
                    "customer_id": customer_id,
                    "as_of": day,
                    "risk_indicator_count": 12.0 if at_risk else 0.0,
                    "risk_inactive_14d": at_risk,
                    "p_churn": 0.99 if at_risk else 0.01,
                    "confidence": 0.99,
                    "milestones_total": 10.0 if progressing else 0.0,
                    "milestones_30d": 1.0 if progressing else 0.0,
                }
            )
    return DecisionDays(ruleset or packaged_ruleset(), pd.DataFrame(rows))


# r: in ST_001 from June 1, meets a risk condition from June 5 on; the 7-day cooldown holds the
# move until June 8. s: meets it on June 2, not June 3, then from June 4. t: first seen on June 1
# already at risk (the history's first day: when it began is unknown). p: first tagged on June 2,
# meets the ST_002 condition from June 4; the cooldown holds the move until June 9. q: onboarded
# into ST_001 on the history's first day, so when q began in ST_001 is unknown.
RUN_HISTORY = [
    ("r", "2024-06-01", None, "ST_001", "R01", "2024-06-01 02:00"),
    ("s", "2024-06-01", None, "ST_001", "R01", "2024-06-01 02:00"),
    ("t", "2024-06-01", None, "ST_004", "R13", "2024-06-01 02:00"),
    ("q", "2024-06-01", None, "ST_001", "R01", "2024-06-01 02:00"),
    ("p", "2024-06-02", None, "ST_001", "R01", "2024-06-02 02:00"),
    ("r", "2024-06-08", "ST_001", "ST_004", "R04", "2024-06-08 02:00"),
    ("s", "2024-06-08", "ST_001", "ST_004", "R04", "2024-06-08 02:00"),
    ("q", "2024-06-08", "ST_001", "ST_002", "R02", "2024-06-08 02:00"),
    ("p", "2024-06-09", "ST_001", "ST_002", "R02", "2024-06-09 02:00"),
]
RUN_INPUTS = {
    "r": ({5, 6, 7, 8}, set()),
    "s": ({2, 4, 5, 6, 7, 8}, set()),
    "t": ({1}, set()),
    "p": (set(), {4, 5, 6, 7, 8, 9}),
    "q": (set(), {3, 4, 5, 6, 7, 8}),
}


def test_detection_speed_counts_from_the_first_qualifying_day_not_the_cooldown():
    # Given r qualifying 3 days before its cooldown-held move, s 4 days (its June 2 is a separate
    # run), and t first seen at risk on the history's first day
    kpi = kpis_by_id(history=RUN_HISTORY, decisions=decision_days(RUN_INPUTS))
    detection = kpi["risk_detection_days"]
    # Then the median of 3 and 4 days is 3.5, t is left out, and 1 day is missed
    assert detection.value == pytest.approx(3.5)
    assert (detection.unit, detection.meets_target) == ("days", False)
    assert "range 3-4 days" in detection.detail
    assert "left out: 1 whose run starts before the stored days" in detection.detail


def test_detection_speed_says_so_when_a_snapshot_is_missing_instead_of_guessing():
    # Given the inputs of June 6 lost (its snapshot is missing)
    decisions = decision_days(RUN_INPUTS)
    kept = decisions.inputs[decisions.inputs["as_of"] != pd.Timestamp("2024-06-06")]
    lost = DecisionDays(decisions.ruleset, kept, missing=(date(2024, 6, 6),))
    detection = kpis_by_id(history=RUN_HISTORY, decisions=lost)["risk_detection_days"]
    # Then neither r nor s is measured from June 7 as if they had begun then: both are left out
    assert detection.value is None
    assert "left out: 3 whose run starts before the stored days" in detection.detail
    assert "snapshots missing for 1 batch days (2024-06-06)" in detection.detail


def test_detection_speed_follows_a_new_rule_into_st004_by_its_target_not_its_id():
    # Given a rule added from ST_005 to ST_004, and u put in ST_005 by hand on June 2, meeting
    # the new rule's condition from June 6 and moved on June 9
    packaged = packaged_ruleset()
    condition = parse_condition({"feature": "risk_indicator_count", "op": ">=", "value": 3})
    added = Rule.model_validate(
        {
            "id": "R17", "from": ["ST_005"], "to": "ST_004", "signal": "rules",
            "description": "campaign failing: risk indicators again",
            "condition": condition,
        }
    )  # fmt: skip
    ruleset = packaged.model_copy(update={"rules": (*packaged.rules, added)})
    history = [
        ("u", "2024-06-01", None, "ST_001", "R01", "2024-06-01 02:00"),
        ("u", "2024-06-02", "ST_001", "ST_005", "person", "2024-06-02 10:00"),
        ("u", "2024-06-09", "ST_005", "ST_004", "R17", "2024-06-09 02:00"),
    ]
    decisions = decision_days({"u": ({6, 7, 8, 9}, set())}, ruleset)
    # Then its detection is 3 days (June 6 to June 9)
    detection = kpis_by_id(history=history, decisions=decisions)["risk_detection_days"]
    assert detection.value == pytest.approx(3.0)


def test_a_campaign_whose_box_ended_is_no_detection():
    # Given u put in a campaign by hand and returned to ST_004 by R16 when its box ended
    history = [
        ("u", "2024-06-01", None, "ST_004", "R13", "2024-06-01 02:00"),
        ("u", "2024-06-02", "ST_004", "ST_005", "person", "2024-06-02 10:00"),
        ("u", "2024-06-30", "ST_005", "ST_004", "R16", "2024-06-30 02:00"),
    ]
    decisions = decision_days({"u": ({1}, set())}, packaged_ruleset())
    # Then detection speed is what it is without the R16 move: R16 reads the state, not the
    # learner, so it detects nothing
    detection = kpis_by_id(history=history, decisions=decisions)["risk_detection_days"]
    without = kpis_by_id(history=history[:2], decisions=decisions)["risk_detection_days"]
    assert (detection.value, detection.detail) == (without.value, without.detail)
    assert "1 " in detection.detail and "2 " not in detection.detail


def test_progression_velocity_counts_to_the_first_st002_qualifying_day_not_the_move():
    # Given p entering ST_001 on June 2, qualifying for ST_002 from June 4, moved on June 9
    kpi = kpis_by_id(history=RUN_HISTORY, decisions=decision_days(RUN_INPUTS))
    velocity = kpi["progression_velocity"]
    # Then velocity is 2 days, not the 7 the cooldown imposed on the move
    assert velocity.value == pytest.approx(2.0)
    assert velocity.meets_target is True
    assert "moves themselves came after a median 7 days" in velocity.detail
    # And q, onboarded when the history began, is left out rather than counted from then
    assert "median of 1 ST_001 -> ST_002 moves" in velocity.detail
    assert "left out: 1 tagged ST_001 on their first stored day" in velocity.detail


def test_run_based_kpis_without_decision_inputs_have_no_value():
    kpi = kpis_by_id(history=RUN_HISTORY)
    assert kpi["risk_detection_days"].value is None
    assert kpi["progression_velocity"].detail.startswith("no daily decision inputs")


# --- recovery and automation accuracy -------------------------------------------------------------


def test_recovery_rate_splits_ended_episodes_by_the_control_flag_at_their_start():
    # Given episodes: b (treated) ST_004 -> ST_005 -> ST_001, c (control) ST_004 -> ST_006,
    # d (treated at its start on June 10) ST_004 -> ST_001 by hand, i (control) still open
    kpi = kpis_by_id()["recovery_rate"]
    # Then 2 of 3 ended episodes recovered; treated 2 of 2, control 0 of 1
    assert kpi.value == pytest.approx(100 * 2 / 3)
    assert (kpi.treated, kpi.control) == (pytest.approx(100.0), pytest.approx(0.0))
    assert "(1 still open)" in kpi.detail


def test_automation_accuracy_counts_reverts_within_7_data_days():
    # Given 19 automatic transitions of June 23 or before (f's and i's later ones are too young):
    # d's ST_004 is undone by a person two days later; b's ST_004 -> ST_005 is the designed
    # follow-up and h's manual move came 10 days after its ST_003, so neither is a revert
    kpi = kpis_by_id()["automation_accuracy"]
    # Then 18 of 19 held up
    assert kpi.value == pytest.approx(100 * 18 / 19)
    assert kpi.meets_target is True
    assert "2 younger than 7 days" in kpi.detail
    assert "no labels given" in kpi.detail


def test_automation_accuracy_checks_risk_moves_against_the_labels():
    # Given labels: b did not churn after its ST_004 (refuted), c did (confirmed), a's label is
    # for a non-risk move and d's risk move has none
    labels = labels_frame([("b", "2024-03-20", 0), ("c", "2024-05-01", 1), ("a", "2024-03-12", 1)])
    kpi = kpis_by_id(outcomes=labels)["automation_accuracy"]
    # Then d (reverted) and b (refuted) are wrong: 17 of 19
    assert kpi.value == pytest.approx(100 * 17 / 19)
    assert "1 confirmed, 1 refuted, 1 without a complete label" in kpi.detail


def test_automation_accuracy_uses_a_label_only_once_its_window_is_complete():
    # Given j moved to ST_004 on June 15 and did not churn: its 30-day label window ends July 15
    history = [
        ("j", "2024-06-01", None, "ST_001", "R01", "2024-06-01 02:00"),
        ("j", "2024-06-15", "ST_001", "ST_004", "R04", "2024-06-15 02:00"),
    ]
    labels = labels_frame([("j", "2024-06-15", 0)])
    # When judged on June 30 the label is not known yet: both moves hold up
    early = kpis_by_id(outcomes=labels, history=history)["automation_accuracy"]
    assert early.value == pytest.approx(100.0)
    assert "0 refuted, 1 without a complete label" in early.detail
    # And on July 14, the window's last day, it counts: the risk move is refuted
    late = kpis_by_id(outcomes=labels, history=history, as_of=date(2024, 7, 14))
    assert late["automation_accuracy"].value == pytest.approx(50.0)


def test_the_wall_clock_never_changes_a_kpi():
    # Given the same history recorded three years later (a replay, or a clock far from the data)
    def shifted(rows):
        later = pd.Timedelta(days=3 * 365)
        return [(*row[:5], str(pd.Timestamp(row[5]) + later)) for row in rows]

    labels = labels_frame([("b", "2024-03-20", 0), ("c", "2024-05-01", 1)])
    decisions = decision_days(RUN_INPUTS)
    for history, as_of in ((HISTORY, AS_OF), (RUN_HISTORY, date(2024, 6, 20))):
        now = kpis_by_id(labels, history, decisions, as_of)
        replayed = kpis_by_id(labels, shifted(history), decisions, as_of)
        # Then every KPI and its detail is the same
        assert [(k.value, k.detail) for k in replayed.values()] == [
            (k.value, k.detail) for k in now.values()
        ]
    # And they have values: the automatic moves are judged by their data days
    assert now["automation_accuracy"].value is not None
    assert now["risk_detection_days"].value == pytest.approx(3.5)


NO_DATA_DETAILS = {
    "active_learner_rate": "no live learners yet",
    "progression_velocity": "no ST_001 -> ST_002 moves yet",
    "mastery_60d": "no history yet: no learner tagged",
    "risk_detection_days": "no automatic ST_004 moves yet",
    "recovery_rate": "no ST_004 episodes yet",
    "automation_accuracy": "no automatic transitions 7+ days old yet (0 younger)",
}


def test_kpis_without_data_say_so_instead_of_reporting_zero():
    # Given an empty log, no scores and no customers
    kpis = compute_kpis(transitions_frame([]), scores_frame([]), customers_frame({}), as_of=AS_OF)
    # Then every KPI has no value, no verdict and a detail that says why
    assert {kpi.id: kpi.detail for kpi in kpis} == NO_DATA_DETAILS
    assert all(kpi.value is None and kpi.meets_target is None for kpi in kpis)


def test_kpis_ignore_what_happened_after_as_of():
    # Given the same history judged on March 31
    early = kpis_by_id(as_of=date(2024, 3, 31))
    # Then only a, b, e, h are live: a ST_002, b ST_005, e ST_003, h ST_002 -> 2 of 4 active
    assert early["active_learner_rate"].value == pytest.approx(100 * 2 / 4)
    # And b's episode, still open then, has not ended
    assert early["recovery_rate"].value is None
    assert early["recovery_rate"].detail == "no ST_004/ST_005 episode has ended yet (1 open)"


def test_a_frame_breaking_its_contract_is_named():
    # Given a log with an unknown tag
    broken = transitions_frame(HISTORY).assign(to_tag="ST_042")
    # When the KPIs are computed, Then the error names the frame and the column
    with pytest.raises(ValueError, match=r"transitions.*to_tag"):
        compute_kpis(broken, scores_frame([]), customers_frame(ENROLLED), as_of=AS_OF)


def test_kpis_read_the_frames_a_store_returns(store):
    # Given a store with day 1 and a move to ST_004 on day 2
    apply(store, date(2024, 3, 1), FIRST_DAY)
    apply(store, date(2024, 3, 2), [("a", "ST_001", "ST_004")])
    # When the KPIs are computed from its frames
    kpis = compute_kpis(
        store.transitions_frame(),
        store.scores_frame(),
        customers_frame({"a": "2024-02-28", "b": "2024-02-28", "c": "2024-02-28"}),
        as_of=date(2024, 3, 2),
    )
    by_id = {kpi.id: kpi for kpi in kpis}
    # Then b and c of the three live learners are active, and a's risk episode is open
    assert by_id["active_learner_rate"].value == pytest.approx(100 * 2 / 3)
    assert by_id["recovery_rate"].detail == "no ST_004/ST_005 episode has ended yet (1 open)"


def test_kpis_of_a_narrow_scores_read_equal_those_of_the_full_read(store):
    # Given a store with a risk episode that ended, a learner in control
    apply(store, date(2024, 3, 1), FIRST_DAY)
    apply(store, date(2024, 3, 2), [("a", "ST_001", "ST_004")])
    apply(store, date(2024, 3, 3), [("a", "ST_004", "ST_001")])
    customers = customers_frame({"a": "2024-02-28", "b": "2024-02-28", "c": "2024-02-28"})

    def kpis_of(scores: pd.DataFrame) -> list:
        return compute_kpis(store.transitions_frame(), scores, customers, as_of=date(2024, 3, 3))

    # When the KPIs are computed from every score column and from SCORE_COLUMNS only
    full = kpis_of(store.scores_frame())
    narrow = kpis_of(store.scores_frame(columns=list(SCORE_COLUMNS)))
    # Then they are the same KPIs, recovery measured
    assert narrow == full
    assert {kpi.id: kpi for kpi in narrow}["recovery_rate"].value == 100.0
