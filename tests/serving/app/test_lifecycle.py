"""The lifecycle loop, day by day, through the real rules engine and the real store (both backends).

Two learners are scripted day by day: both drift into ST_004 and get a retention campaign from a
CS lead; one re-engages during it, the other does not. The rules engine decides every day on the
store's point-in-time state, as the batch job does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd

import rules
from tests.serving.batches import set_override

START = date(2024, 3, 1)
CAMPAIGN_DAY = START + timedelta(days=10)
"""The data day the CS lead's campaigns take effect (recorded after the day before's batch)."""
WALL = datetime(2024, 12, 2, 15, tzinfo=UTC)


def scripted(ruleset: rules.RuleSet, day: date) -> pd.DataFrame:
    """The day's scored rows: both drift from day 3; 'back' is active again 7 days into the
    campaign, 'gone' never is (but logs in now and then: never 30 days silent)."""
    rows = []
    for customer_id in ("back", "gone"):
        drifting = day >= START + timedelta(days=3)
        back = customer_id == "back" and day >= CAMPAIGN_DAY + timedelta(days=7)
        rows.append(
            {
                "customer_id": customer_id,
                "product_tag": "PT_001",
                "mrr": 49.0,
                "p_churn": 0.1 if back or not drifting else 0.7,
                "confidence": 0.8,
                "risk_indicator_count": 0.0 if back or not drifting else 5.0,
                "active_days_7d": 5.0 if back or not drifting else 0.0,
                "days_since_last_event": 1.0 if back or not drifting else 12.0,
            }
        )
    frame = pd.DataFrame(rows)
    for feature in ruleset.features_used:
        if feature not in frame:
            frame[feature] = 0.0
    return frame


def run_days(store, ruleset: rules.RuleSet, first: date, last: date) -> None:
    """Decide and write each day, as ``lstep score`` does, on the state of that day."""
    day = first
    while day <= last:
        state = store.state_frame(as_of=day)
        decided = rules.decide(ruleset, state, scripted(ruleset, day), day)
        store.apply_batch(
            day, decided, None, run_id=f"job-{day}", model_version="m1", rules_only=False,
            now=datetime(day.year, day.month, day.day, 2, tzinfo=UTC),
        )  # fmt: skip
        day += timedelta(days=1)


def moves(store, customer_id: str) -> list[tuple[str, str, str]]:
    """(data day, to_tag, rule or actor) of a learner's transitions."""
    history = store.history(customer_id)
    return [
        (
            str(row.as_of)[:10],
            row.to_tag,
            row.rule_id if isinstance(row.rule_id, str) else row.actor,
        )
        for row in history.itertuples()
    ]


def test_a_campaign_ends_by_r08_when_re_engaged_and_by_r16_when_its_box_ends(store, ruleset):
    # Given both learners at risk by the day before the campaign
    run_days(store, ruleset, START, CAMPAIGN_DAY - timedelta(days=1))
    assert store.current("back")["tag"] == store.current("gone")["tag"] == "ST_004"
    # When a CS lead starts a retention campaign for each (the default 28-day box), weeks later
    # by the wall clock
    for customer_id in ("back", "gone"):
        set_override(store, customer_id, "ST_005", actor="ana", reason="retention call", now=WALL)
    # And the batch runs every day until the box is over
    run_days(store, ruleset, CAMPAIGN_DAY, CAMPAIGN_DAY + timedelta(days=30))
    # Then 'back' left ST_005 by R08 once re-engaged (after the 7-day cooldown)
    back = moves(store, "back")
    assert back[-2:] == [
        (str(CAMPAIGN_DAY), "ST_005", "ana"),
        (str(CAMPAIGN_DAY + timedelta(days=7)), "ST_001", "R08"),
    ]
    # And 'gone' returned to ST_004 by R16 on the day the 28-day box ended, not before
    gone = moves(store, "gone")
    assert gone[-2:] == [
        (str(CAMPAIGN_DAY), "ST_005", "ana"),
        (str(CAMPAIGN_DAY + timedelta(days=28)), "ST_004", "R16"),
    ]
    # And neither campaign is left open beside the new tag
    assert store.current("back")["override"] is None
    assert store.current("gone")["override"] is None


def test_replaying_the_days_before_a_campaign_decides_as_before(store, ruleset):
    # Given ten days decided, and what the engine decides for day 5 (a dry run of it)
    run_days(store, ruleset, START, CAMPAIGN_DAY - timedelta(days=1))
    day5 = START + timedelta(days=5)
    before = rules.decide(ruleset, store.state_frame(day5), scripted(ruleset, day5), day5)
    # When a campaign is recorded, and day 5 is decided again
    set_override(store, "gone", "ST_005", actor="ana", reason="retention call", now=WALL)
    again = rules.decide(ruleset, store.state_frame(day5), scripted(ruleset, day5), day5)
    # Then it decides exactly as before: the override begins after the replayed day
    pd.testing.assert_frame_equal(again, before)
