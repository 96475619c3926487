"""KPIs on a hand-built audit log; each expected value is worked out by hand beside its check."""

from __future__ import annotations

from datetime import UTC, date

import pandas as pd
import pytest

from serving.app.kpis import Kpi, compute_kpis
from tests.serving.batches import FIRST_DAY, apply

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


def kpis_by_id(outcomes: pd.DataFrame | None = None, history=HISTORY) -> dict[str, Kpi]:
    kpis = compute_kpis(
        transitions_frame(history),
        scores_frame(CONTROL_FLAGS),
        customers_frame(ENROLLED),
        as_of=AS_OF,
        outcomes=outcomes,
    )
    return {kpi.id: kpi for kpi in kpis}


def test_six_kpis_come_back_in_the_documented_order():
    # Given the hand-built history / When the KPIs are computed / Then all six come back
    assert list(kpis_by_id()) == [
        "active_learner_rate",
        "progression_velocity",
        "mastery_60d",
        "risk_detection_hours",
        "recovery_rate",
        "automation_accuracy",
    ]


def test_active_learner_rate_counts_live_learners_known_at_as_of():
    # Given latest tags at June 30: a ST_003, b ST_002, c ST_006 (not live), d ST_001, e ST_003,
    # f ST_001, h ST_002 (set by a person), i ST_004; g only appears on July 2
    kpi = kpis_by_id()["active_learner_rate"]
    # Then 4 (b, d, f, h) of the 7 live learners (a, b, d, e, f, h, i) are active: below 70 %
    assert kpi.value == pytest.approx(100 * 4 / 7)
    assert (kpi.target, kpi.comparison, kpi.unit, kpi.meets_target) == (70.0, ">=", "%", False)


def test_progression_velocity_is_the_median_stay_in_st001_before_st002():
    # Given ST_001 -> ST_002 after 10 (a), 20 (b, since its recovery), 7 (e) and 18 (h) days
    kpi = kpis_by_id()["progression_velocity"]
    # Then the median of 7, 10, 18, 20 is 14 days, exactly on target
    assert kpi.value == pytest.approx((10 + 18) / 2)
    assert kpi.meets_target is True


def test_mastery_counts_only_learners_enrolled_60_days_before_as_of():
    # Given the cohort enrolled by May 1: a, b, c, e, h; a mastered after 50 days, e after 29,
    # h after 74 (too late), b and c never
    kpi = kpis_by_id()["mastery_60d"]
    # Then 2 of 5 reached ST_003 within 60 days: 40 %, exactly on target
    assert kpi.value == pytest.approx(100 * 2 / 5)
    assert kpi.meets_target is True
    assert "2 of 5" in kpi.detail


def test_detection_speed_measures_hours_from_the_decision_day_to_the_st004_move():
    # Given automatic ST_004 moves written 2 h (b), 8 h (c), 30 h (d) and 1 h (i) after 00:00 UTC
    # of their decision day
    kpi = kpis_by_id()["risk_detection_hours"]
    # Then the median of 1, 2, 8, 30 is 5 hours
    assert kpi.value == pytest.approx((2 + 8) / 2)
    assert (kpi.unit, kpi.meets_target) == ("hours", True)
    assert "slowest 30.0 h" in kpi.detail


def test_detection_speed_leaves_out_moves_replayed_by_a_backfill():
    # Given the history plus two ST_004 moves recorded months after their data closed (a backfill)
    replayed = [
        ("x", "2024-05-01", "ST_001", "ST_004", "R04", "2024-06-29 09:00"),
        ("y", "2024-05-02", "ST_001", "ST_004", "R04", "2024-06-29 09:00"),
    ]
    # When the KPIs are computed
    detection = kpis_by_id(history=HISTORY + replayed)["risk_detection_hours"]
    # Then the live moves alone set the median (still 5 h) and the detail counts the replayed ones
    assert detection.value == pytest.approx((2 + 8) / 2)
    assert "2 backfilled moves left out" in detection.detail


def test_detection_speed_of_a_backfill_only_history_is_no_data_not_a_huge_number():
    replayed = [("x", "2024-05-01", "ST_001", "ST_004", "R04", "2024-06-29 09:00")]
    kpi = kpis_by_id(history=replayed)
    assert kpi["risk_detection_hours"].value is None
    assert "backfill" in kpi["risk_detection_hours"].detail


def test_recovery_rate_splits_ended_episodes_by_the_control_flag_at_their_start():
    # Given episodes: b (treated) ST_004 -> ST_005 -> ST_001, c (control) ST_004 -> ST_006,
    # d (treated at its start on June 10) ST_004 -> ST_001 by hand, i (control) still open
    kpi = kpis_by_id()["recovery_rate"]
    # Then 2 of 3 ended episodes recovered; treated 2 of 2, control 0 of 1
    assert kpi.value == pytest.approx(100 * 2 / 3)
    assert (kpi.treated, kpi.control) == (pytest.approx(100.0), pytest.approx(0.0))
    assert "(1 still open)" in kpi.detail


def test_automation_accuracy_counts_reverts_within_7_days():
    # Given 19 automatic transitions created by June 23 (f's and i's later ones are too young):
    # d's ST_004 is undone by a person a day later; b's ST_004 -> ST_005 is the designed follow-up
    # and h's manual move came 10 days after its ST_003, so neither is a revert
    kpi = kpis_by_id()["automation_accuracy"]
    # Then 18 of 19 held up
    assert kpi.value == pytest.approx(100 * 18 / 19)
    assert kpi.meets_target is True
    assert "2 younger than 7 days" in kpi.detail


def test_automation_accuracy_checks_risk_moves_against_the_labels():
    # Given labels: b did not churn after its ST_004 (refuted), c did (confirmed), a's label is
    # for a non-risk move and d's risk move has none
    labels = labels_frame([("b", "2024-03-20", 0), ("c", "2024-05-01", 1), ("a", "2024-03-12", 1)])
    kpi = kpis_by_id(outcomes=labels)["automation_accuracy"]
    # Then d (reverted) and b (refuted) are wrong: 17 of 19
    assert kpi.value == pytest.approx(100 * 17 / 19)
    assert "1 risk moves refuted by the label (1 without one)" in kpi.detail


NO_DATA_DETAILS = {
    "active_learner_rate": "no live learners yet",
    "progression_velocity": "no ST_001 -> ST_002 moves yet",
    "mastery_60d": "no learners enrolled 60+ days ago yet",
    "risk_detection_hours": "no automatic ST_004 moves yet",
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
    early = {
        kpi.id: kpi
        for kpi in compute_kpis(
            transitions_frame(HISTORY),
            scores_frame(CONTROL_FLAGS),
            customers_frame(ENROLLED),
            as_of=date(2024, 3, 31),
        )
    }
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
    # Then b and c of the three live learners are active, and the ST_004 move took 2 hours
    assert by_id["active_learner_rate"].value == pytest.approx(100 * 2 / 3)
    assert by_id["risk_detection_hours"].value == pytest.approx(2.0)
    assert by_id["risk_detection_hours"].detail.startswith("median of 1 automatic")
