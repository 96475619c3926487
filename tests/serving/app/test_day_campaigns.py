"""The day's campaign plan from the outbox (``serving.app.day_campaigns.plan_day_campaigns``).

The store reads window counts only for the (learner, campaign) pairs the day's decisions name:
these tests hold the plan to what the whole outbox says, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from serving.app.day_campaigns import catalogue_planner, plan_day_campaigns
from serving.core.assess import Assessment
from serving.core.messages import CANCELLED, PENDING, SENT
from serving.infra.store import StateStore
from serving.infra.tables import Outbox
from tests.serving.batches import at
from tests.serving.core.test_campaigns import decision, features_of
from tests.serving.outbox_fixtures import messages

TODAY = date(2026, 6, 1)
CAPPED = "CP_11"  # one step, at most one message in 90 days: any message in the window blocks
OTHER = "CP_10"  # two steps, at most two in 90 days: likewise


def put(store: StateStore, learner: str, campaign: str, days_ago: int, state: str) -> None:
    """One outbox row, planned ``days_ago`` before today, as a dispatcher left it."""
    day = TODAY - timedelta(days=days_ago)
    row = messages(day, [learner], campaign=campaign).assign(
        state=state, tries=0, run_id=f"run-{day}", created_at=at(day)
    )
    with store._engine.begin() as conn:
        conn.execute(Outbox.__table__.insert(), row.to_dict("records"))


def assessment(triggers: dict[str, str | None]) -> Assessment:
    """Today's assessment: each learner's decision names the campaign ``triggers`` gives."""
    rows = [decision(learner, campaign) for learner, campaign in triggers.items()]
    return Assessment(
        as_of=TODAY,
        features=features_of(*triggers),
        scores=pd.DataFrame({"customer_id": list(triggers)}),
        decisions=pd.DataFrame(rows),
    )


class CountingStore:
    """The store, recording the pairs each window read asked for."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.asked: list[pd.DataFrame | None] = []

    def pending_pairs(self, as_of: date) -> pd.DataFrame:
        return self.store.pending_pairs(as_of)

    def messages_in_window(self, as_of, windows, pairs=None) -> pd.DataFrame:
        self.asked.append(pairs)
        return self.store.messages_in_window(as_of, windows, pairs)


def test_the_candidate_pairs_are_counted_as_the_whole_outbox_counts_them(store, ruleset):
    # Given the outbox of six learners' earlier messages, one pending, one planned today
    put(store, "old", CAPPED, 89, SENT)  # inside the 90-day window on its last day
    put(store, "older", CAPPED, 90, SENT)  # just out of it
    put(store, "cancelled", CAPPED, 10, CANCELLED)  # never sent: does not count
    put(store, "elsewhere", CAPPED, 5, SENT)  # another campaign than today's trigger
    put(store, "quiet", CAPPED, 5, SENT)  # in the window, but triggers nothing today
    put(store, "replaced", CAPPED, 0, PENDING)  # today's own: the day is being replaced
    put(store, "running", CAPPED, 3, PENDING)  # a step still to send: not enrolled again
    triggers = {
        "old": CAPPED, "older": CAPPED, "cancelled": CAPPED, "elsewhere": OTHER,
        "quiet": None, "replaced": CAPPED, "running": CAPPED,
    }  # fmt: skip
    counting = CountingStore(store)
    # When today is planned
    plan = plan_day_campaigns(assessment(triggers), counting, catalogue_planner(ruleset))
    # Then the capped learner is left out, every other triggered one is enrolled
    enrolled = set(zip(plan.messages["customer_id"], plan.messages["campaign_id"], strict=True))
    assert enrolled == {
        ("older", CAPPED), ("cancelled", CAPPED), ("elsewhere", OTHER), ("replaced", CAPPED)
    }  # fmt: skip
    # And the window was read for the pairs that could be enrolled only: not the quiet
    # learner's, not the running one's
    (asked,) = counting.asked
    assert set(zip(asked["customer_id"], asked["campaign_id"], strict=True)) == {
        (learner, campaign)
        for learner, campaign in triggers.items()
        if campaign is not None and learner != "running"
    }
