"""Shared contexts on SQLite and PostgreSQL (``serving.infra.outbox_contexts``): the outbox
keeps a (learner, campaign)'s context once per planned day, and every read that renders or
shows messages gets each message its own, even when the one holding it is not among them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy import text

import serving.infra.outbox_contexts as outbox_contexts
from serving.core.messages import SHARED_CONTEXT, CampaignPlan
from serving.core.planned import ContextField, StepMessages, planned_messages
from serving.infra.store import StateStore
from tests.serving.batches import FIRST_DAY, apply
from tests.serving.outbox_fixtures import apply_with_plan

DAY1, DAY2, DAY3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
STEP_DAYS = 3
WALL = datetime(2024, 3, 9, 9, tzinfo=UTC)
LEASE = timedelta(minutes=5)
MOVES = [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_004")]


def planned_plan(day: date, ids: list[str], channels=("email", "email")) -> CampaignPlan:
    """The planner's messages of a two-step campaign (the second 3 days later) for ``ids``."""
    everyone = np.arange(len(ids))
    steps = [
        StepMessages(
            campaign_id="CP_01",
            step=step,
            due_on=day + timedelta(days=STEP_DAYS * step),
            template_id="t",
            learners=everyone,
            channels=np.full(len(ids), channels[step], object),
            variants=np.full(len(ids), "", object),
            control=np.zeros(len(ids), bool),
        )
        for step in range(2)
    ]
    contexts = {
        "customer_id": ContextField.each(ids),
        "day": ContextField(everyone * 0, [day.isoformat()]),
    }
    return CampaignPlan(planned_messages(day, ids, contexts, steps))


def stored_contexts(store: StateStore) -> dict[str, str]:
    """customer_id:step -> the context text the outbox holds."""
    with store._connect() as conn:
        rows = conn.execute(text("SELECT customer_id, step, context FROM outbox")).all()
    return {f"{customer}:{step}": context for customer, step, context in rows}


def own(contexts, customer_ids, days=None) -> bool:
    """Whether each context is its learner's JSON object (of its planned day, when given)."""
    read = [json.loads(context) for context in contexts]
    if days is not None and [text["day"] for text in read] != [str(day)[:10] for day in days]:
        return False
    return [text["customer_id"] for text in read] == list(customer_ids)


def test_a_campaigns_context_is_stored_once_and_read_back_on_every_message(store):
    # Given a day planning a two-step campaign for a and b
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, planned_plan(DAY2, ["a", "b"]))
    # Then the outbox holds each learner's context on the first step only
    held = stored_contexts(store)
    assert held["a:1"] == held["b:1"] == SHARED_CONTEXT
    assert own([held["a:0"], held["b:0"]], ["a", "b"])
    # And every read gives each message its own: all columns, some, some states
    frame = store.outbox_frame()
    assert own(frame["context"], frame["customer_id"])
    some = store.outbox_frame(columns=["message_id", "context"])
    assert list(some.columns) == ["message_id", "context"]
    assert own(some["context"], frame["customer_id"])


def test_messages_read_without_the_one_holding_their_context_still_get_it(store, monkeypatch):
    # Given a and b enrolled on day 2, a again on day 3, and the first steps sent: the
    # messages holding the contexts; each learner's holders looked up by a statement of its own
    monkeypatch.setattr(outbox_contexts, "_HOLDER_LEARNERS", 1)
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, planned_plan(DAY2, ["a", "b"]))
    apply_with_plan(store, DAY3, MOVES[:1], planned_plan(DAY3, ["a"]))
    first = store.claim_messages("d1", data_day=DAY3, now=WALL, channels=None, lease=LEASE, limit=9)
    assert [row["step"] for row in first] == [0, 0, 0]
    for row in first:
        store.record_sent(row["message_id"], "d1", subject="s", body="b", now=WALL)
    # When the second steps are read pending, due, then claimed
    later = DAY3 + timedelta(days=STEP_DAYS)
    pending = store.outbox_frame(states=["pending"])
    due = store.due_messages(data_day=later, now=WALL, channels=None, lease=LEASE)
    claimed = store.claim_messages(
        "d2", data_day=later, now=WALL, channels=None, lease=LEASE, limit=9
    )
    # Then each of them has its learner's context of its own planned day
    assert pending["step"].tolist() == due["step"].tolist() == [1, 1, 1]
    assert own(pending["context"], pending["customer_id"], pending["planned_on"])
    assert own(due["context"], due["customer_id"], due["planned_on"])
    contexts, learners, days = zip(
        *((row["context"], row["customer_id"], row["planned_on"]) for row in claimed), strict=True
    )
    assert len(claimed) == 3 and own(contexts, learners, days)


def test_a_replaced_day_that_keeps_a_sent_holder_stores_contexts_on_what_it_replans(store):
    # Given a's first step sent, and the day replaced with the same plan
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, planned_plan(DAY2, ["a", "b"]))
    claimed = store.claim_messages(
        "d1", data_day=DAY2, now=WALL, channels=None, lease=LEASE, limit=1
    )
    store.record_sent(claimed[0]["message_id"], "d1", subject="s", body="b", now=WALL)
    sent = claimed[0]["customer_id"]
    apply_with_plan(store, DAY2, MOVES, planned_plan(DAY2, ["a", "b"]), run_id="redo", replace=True)
    # Then the replanned second step of the sent learner holds its context itself (the day
    # left out the message that held it), as every replanned message of a replace does, and
    # every message reads back its own
    held = stored_contexts(store)
    other = "b" if sent == "a" else "a"
    assert own([held[f"{sent}:1"], held[f"{other}:1"]], [sent, other])
    frame = store.outbox_frame()
    assert len(frame) == 4 and own(frame["context"], frame["customer_id"])


def test_a_replace_that_drops_the_holder_of_a_kept_message_leaves_it_its_context(store):
    # Given a's second step (push) sent while its first (email, the context's holder) was not
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, planned_plan(DAY2, ["a"], channels=("email", "push")))
    later = DAY2 + timedelta(days=STEP_DAYS)
    claimed = store.claim_messages(
        "d1", data_day=later, now=WALL, channels=("push",), lease=LEASE, limit=9
    )
    assert [(row["customer_id"], row["step"]) for row in claimed] == [("a", 1)]
    store.record_sent(claimed[0]["message_id"], "d1", subject="s", body="b", now=WALL)
    # When the day is replaced with a plan without a: the unsent first step goes
    apply_with_plan(store, DAY2, MOVES, planned_plan(DAY2, ["b"]), run_id="redo", replace=True)
    # Then the sent step kept its context, now its own
    held = stored_contexts(store)
    assert "a:0" not in held and own([held["a:1"]], ["a"])
    frame = store.outbox_frame(customer_ids=["a"])
    assert own(frame["context"], ["a"], frame["planned_on"])
