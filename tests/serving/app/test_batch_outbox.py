"""The batch day with a campaign planner (``serving.app.batch.plan_day_campaigns``): the plan
is made from the day's decisions and the outbox's state and written with the day.

The planner here is a stand-in with the real one's signature: one welcome message per learner
the day decided, and cancelling every pending message of a learner who churned.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date

import pandas as pd

from serving.app.batch import BatchContext, BatchInputs, Models, run_day
from serving.core.messages import CANCELLED, PENDING, SUPPRESSED, CampaignPlan, message_key
from tests.features.event_frames import customers_frame, events_frame
from tests.serving.fixtures import FIRST_DAY, NOW

DAY_ONE, DAY_TWO = date(2024, 3, 10), date(2024, 4, 1)


class Planner:
    """Plans CP_01 step 0 for every decided learner; cancels the pending ones of ST_006."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.windows = {"CP_01": 30}

    def candidates(self, decisions, pending, as_of) -> pd.DataFrame:
        return decisions[["customer_id"]].assign(campaign_id="CP_01")

    def __call__(
        self, decisions, features, as_of, *, pending, in_window, candidates=None
    ) -> CampaignPlan:
        self.seen.append(
            {"as_of": as_of, "pending": pending, "in_window": in_window, "n": len(features)}
        )
        rows = [
            {
                "message_id": message_key(as_of, learner, "CP_01", 0),
                "planned_on": pd.Timestamp(as_of), "due_on": pd.Timestamp(as_of),
                "customer_id": learner, "campaign_id": "CP_01", "step": 0, "channel": "email",
                "template_id": "cp01", "variant": "", "control": bool(control),
                "context": json.dumps({"tag": str(tag)}),
            }
            for learner, control, tag in zip(
                decisions["customer_id"], decisions["control"], decisions["to_tag"], strict=True
            )
        ]  # fmt: skip
        churned = decisions.loc[decisions["to_tag"] == "ST_006", "customer_id"]
        cancels = pending.loc[pending["customer_id"].isin(churned), ["customer_id", "campaign_id"]]
        return CampaignPlan(messages=pd.DataFrame(rows), cancels=cancels)


def inputs() -> BatchInputs:
    """ "quiet", active until 2024-03-01 (churned by 2024-04-01), and "busy", active throughout."""
    busy_days = pd.date_range("2024-02-01", "2024-04-05", freq="3D")
    events = events_frame(
        [["quiet", "2024-03-01 10:00:00", "session", 600.0, "web", None, 3]]
        + [["busy", f"{day.date()} 09:00:00", "session", 900.0, "web"] for day in busy_days]
    )
    return BatchInputs(events=events, customers=customers_frame([["quiet"], ["busy"]]))


def context(store, ruleset, run_id: str, planner=None) -> BatchContext:
    return BatchContext(
        store=store, models=Models(None, ruleset), run_id=run_id, now=NOW, planner=planner
    )


def test_the_days_plan_is_made_from_the_outbox_and_written_with_the_day(sqlite_store, ruleset):
    planner = Planner()
    # When day one runs with the planner
    first = run_day(DAY_ONE, inputs(), context(sqlite_store, ruleset, "one", planner))
    # Then both learners got their message, and the planner saw an empty outbox
    assert first.run.summary["messages"]["inserted"] == 2
    assert planner.seen[0]["pending"].empty and planner.seen[0]["n"] == 2
    # When a dry run of day two runs, Then it plans nothing into the store
    run_day(DAY_TWO, inputs(), context(sqlite_store, ruleset, "dry", planner), dry_run=True)
    assert len(sqlite_store.outbox_frame()) == 2 and len(planner.seen) == 1
    # When day two runs (quiet churns by R09)
    second = run_day(DAY_TWO, inputs(), context(sqlite_store, ruleset, "two", planner))
    # Then the planner saw day one's pending messages, and quiet's was cancelled
    assert set(planner.seen[1]["pending"]["customer_id"]) == {"quiet", "busy"}
    counted = planner.seen[1]["in_window"]
    assert dict(zip(counted["customer_id"], counted["messages"], strict=True)) == {
        "quiet": 1, "busy": 1
    }  # fmt: skip
    outbox = sqlite_store.outbox_frame()
    day_one = outbox[outbox["planned_on"] == pd.Timestamp(DAY_ONE)].set_index("customer_id")
    assert day_one["state"].to_dict() == {"busy": PENDING, "quiet": CANCELLED}
    assert second.run.summary["messages"] == {
        "planned": 2, "inserted": 2, "suppressed": 0, "cancelled": 1
    }  # fmt: skip
    # When day two runs again, Then it is already done and nothing is planned twice
    run_day(DAY_TWO, inputs(), context(sqlite_store, ruleset, "again", planner))
    assert len(sqlite_store.outbox_frame()) == 4


def test_without_campaigns_no_message_is_written(sqlite_store, ruleset):
    day = context(sqlite_store, ruleset, "one")
    result = run_day(DAY_ONE, inputs(), dataclasses.replace(day, campaigns=False))
    assert result.run.status == "completed"
    assert sqlite_store.outbox_frame().empty and "messages" not in result.run.summary


def test_the_catalogue_plans_the_decided_campaigns_and_a_replace_adds_nothing_twice(
    sqlite_store, ruleset, simulated_log
):
    # Given the packaged catalogue (the default planner) and the simulated log, rules only
    log = BatchInputs(
        events=simulated_log.events, customers=simulated_log.customers, validated=True
    )
    day = FIRST_DAY
    # When the day runs
    result = run_day(day, log, context(sqlite_store, ruleset, "cat"))
    # Then every learner whose decision names a campaign has its first step planned on the day,
    # on that campaign; the control group's are suppressed, the others pending
    scores = sqlite_store.scores_frame(day)
    with_campaign = scores.dropna(subset=["campaign_id"])
    outbox = sqlite_store.outbox_frame()
    assert len(with_campaign) > 0 and len(outbox) >= len(with_campaign)
    first = outbox[outbox["step"] == 0].set_index("customer_id")
    expected = with_campaign.set_index("customer_id")
    assert set(first.index) <= set(expected.index)
    assert (first["campaign_id"] == expected.loc[first.index, "campaign_id"]).all()
    control = expected.loc[first.index, "control"]
    assert (first.loc[control, "state"] == SUPPRESSED).all()
    assert (first.loc[~control, "state"] == PENDING).all()
    assert result.run.summary["messages"]["inserted"] == len(outbox)
    # When the day is replaced, Then the same messages are planned again, none twice
    again = run_day(day, log, context(sqlite_store, ruleset, "cat-again"), replace=True)
    assert again.run.summary["messages"]["planned"] == len(outbox)
    assert sorted(sqlite_store.outbox_frame()["message_id"]) == sorted(outbox["message_id"])


def test_a_first_load_welcomes_the_learners_who_just_enrolled_only(sqlite_store, ruleset):
    # Given a store's first day: "veteran" enrolled two months before it, "newcomer" the day
    # before, both active on that day
    day = DAY_ONE
    events = events_frame(
        [
            ["veteran", "2024-03-09 08:00:00", "session", 600.0, "web"],
            ["newcomer", "2024-03-09 18:00:00", "session", 600.0, "web"],
        ]
    )
    customers = customers_frame([["veteran", "2024-01-10 09:00:00"], ["newcomer", "2024-03-09"]])
    log = BatchInputs(events=events, customers=customers)
    # When the day runs with the packaged catalogue
    run_day(day, log, context(sqlite_store, ruleset, "first"))
    # Then both are tagged for the first time, in the audit log as moves from "new"
    moves = sqlite_store.transitions_frame().set_index("customer_id")
    assert moves.loc[["veteran", "newcomer"], "from_tag"].isna().all()
    # and the newcomer is welcomed, while the veteran gets the campaign of the tag they hold,
    # no campaign of a move (a welcome or a celebration)
    decided = sqlite_store.scores_frame(day).set_index("customer_id")["campaign_id"]
    moved_into = {c.id for c in ruleset.campaigns.campaigns if hasattr(c.trigger, "into")}
    assert decided["newcomer"] == "CP_01"
    assert decided["veteran"] not in moved_into
    assert ruleset.campaigns.get(decided["veteran"]).trigger.tag == moves.loc["veteran", "to_tag"]
    welcomed = sqlite_store.outbox_frame().query("campaign_id == 'CP_01'")
    assert set(welcomed["customer_id"]) == {"newcomer"}
