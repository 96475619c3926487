"""``lstep dispatch`` end to end: the outbox, real SMTP and HTTP receivers on 127.0.0.1, a file.

Plans are hand-made (``tests.serving.outbox_fixtures``); the store is SQLite, and PostgreSQL
where the claim matters.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from serving.app.dispatch import Dispatcher, DispatchOptions, dispatch
from serving.core.messages import DEAD, FAILED, PENDING, SENT, SUPPRESSED
from serving.infra.sinks import build_sinks
from serving.infra.store import StateStore
from serving.settings import DispatchSettings
from tests.serving.batches import FIRST_DAY, apply
from tests.serving.outbox_fixtures import apply_with_plan, messages, plan, render
from tests.serving.receivers import SmtpReceiver, WebhookReceiver, free_port

DAY1, DAY2 = date(2024, 3, 1), date(2024, 3, 2)
NOON = datetime(2024, 3, 3, 12, tzinfo=UTC)
SECRET = "hook-secret"
MOVES = [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_004"), ("c", "ST_001", "ST_001")]


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings(**changes) -> DispatchSettings:
    values = {
        "webhook_secret": SECRET, "webhook_backoff_s": 0.0, "smtp_host": "127.0.0.1",
        "smtp_port": free_port(), "retry_base_s": 60.0, "max_tries": 3,
    }  # fmt: skip
    return DispatchSettings(**{**values, **changes})


def dispatcher(store: StateStore, config: DispatchSettings, clock: Clock, file: Path):
    return Dispatcher(
        store=store, settings=config, clock=clock, render=render,
        open_sinks=lambda channels: build_sinks(config, file, channels),
    )  # fmt: skip


def planned_day(store: StateStore, frame: pd.DataFrame) -> None:
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, plan(frame))


def by_learner(store: StateStore) -> dict[str, str]:
    frame = store.outbox_frame()
    return dict(zip(frame["customer_id"] + ":" + frame["channel"], frame["state"], strict=True))


def test_due_messages_reach_smtp_webhook_and_file_and_the_control_gets_nothing(store, tmp_path):
    # Given email for a and control z, a webhook for b, a CSM task for c; a receiver that
    # fails the first two tries of each webhook
    frame = pd.concat(
        [
            messages(DAY2, ["a", "z"], control=("z",)),
            messages(DAY2, ["b"], channel="webhook"),
            messages(DAY2, ["c"], channel="csm_task"),
        ]
    )
    planned_day(store, frame)
    with SmtpReceiver() as smtp, WebhookReceiver(SECRET, fail_first=2) as hook:
        config = settings(smtp_port=smtp.port, webhook_url=hook.url)
        parts = dispatcher(store, config, Clock(NOON), tmp_path / "out.jsonl")
        # When dispatched
        summary, due = dispatch(parts, DispatchOptions())
        # And dispatched again
        again, due_again = dispatch(parts, DispatchOptions())
    # Then the three were sent once each, each through its sink; the control's stays suppressed
    assert (due, summary.sent, summary.failed, summary.dead) == (3, 3, 0, 0)
    assert dict(summary.by_channel) == {"email": 1, "webhook": 1, "csm_task": 1}
    assert by_learner(store) == {
        "a:email": SENT, "z:email": SUPPRESSED, "b:webhook": SENT, "c:csm_task": SENT
    }  # fmt: skip
    assert [mail["Subject"] for mail in smtp.mails] == ["[cp_01_step0] for A"]
    assert [body["customer_id"] for body in hook.bodies] == ["b"]
    assert hook.tries[hook.bodies[0]["message_id"]] == 3  # two 500s, then delivered
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["customer_id"] for line in lines] == ["c"]
    # And the rendered message is kept with when it went
    sent = store.outbox_frame().set_index("customer_id").loc["a"]
    assert (sent["subject"], sent["body"], sent["sent_at"]) == ("[cp_01_step0] for A", "Hi A", NOON)
    # And the second run found nothing to send
    assert (due_again, again.sent) == (0, 0) and len(smtp.mails) == 1


def test_a_sink_that_is_down_leaves_messages_to_retry_then_dead_after_the_last_try(
    sqlite_store, tmp_path
):
    # Given an email for a and b and no SMTP server listening
    planned_day(sqlite_store, messages(DAY2, ["a", "b"]))
    clock = Clock(NOON)
    config = settings(max_tries=2)
    parts = dispatcher(sqlite_store, config, clock, tmp_path / "out.jsonl")
    # When dispatched
    summary, _ = dispatch(parts, DispatchOptions())
    # Then both failed, kept with the error and a retry a minute later
    assert (summary.sent, summary.failed) == (0, 2)
    stored = sqlite_store.outbox_frame()
    assert set(stored["state"]) == {FAILED} and (stored["tries"] == 1).all()
    assert stored["last_error"].str.contains(f"SMTP 127.0.0.1:{config.smtp_port}").all()
    assert (stored["next_attempt_at"] == NOON + timedelta(seconds=60)).all()
    # And before the retry time nothing is due
    assert dispatch(parts, DispatchOptions())[1] == 0
    # When the server is up after the retry time, Then a is delivered (limit 1) ...
    clock.now = NOON + timedelta(minutes=2)
    with SmtpReceiver() as smtp:
        up = dispatcher(sqlite_store, settings(smtp_port=smtp.port, max_tries=2), clock, tmp_path)
        delivered, _ = dispatch(up, DispatchOptions(limit=1))
    assert delivered.sent == 1 and len(smtp.mails) == 1
    # ... and b, tried again while it is down, is dead after its second try
    clock.now = NOON + timedelta(minutes=4)
    last, _ = dispatch(parts, DispatchOptions())
    assert last.dead == 1
    assert sorted(sqlite_store.outbox_frame()["state"]) == [DEAD, SENT]


def test_quiet_hours_defer_email_and_push_but_not_csm_tasks(sqlite_store, tmp_path):
    # Given an email for a and a CSM task for b, at 22:30 UTC inside the 21:00-07:00 window
    frame = pd.concat([messages(DAY2, ["a"]), messages(DAY2, ["b"], channel="csm_task")])
    planned_day(sqlite_store, frame)
    clock = Clock(datetime(2024, 3, 3, 22, 30, tzinfo=UTC))
    with SmtpReceiver() as smtp:
        parts = dispatcher(sqlite_store, settings(smtp_port=smtp.port), clock, tmp_path / "f")
        # When dispatched at night
        night, _ = dispatch(parts, DispatchOptions())
        # Then the task went, the email waits (not lost)
        assert (night.sent, night.deferred) == (1, 1)
        assert by_learner(sqlite_store) == {"a:email": PENDING, "b:csm_task": SENT}
        # When dispatched after 07:00, Then the email goes
        clock.now = datetime(2024, 3, 4, 7, 5, tzinfo=UTC)
        morning, _ = dispatch(parts, DispatchOptions())
    assert morning.sent == 1 and len(smtp.mails) == 1


def test_the_frequency_cap_defers_a_learners_extra_messages(sqlite_store, tmp_path):
    # Given two campaigns messaging a on the same day and a cap of one per 24 h
    frame = pd.concat(
        [
            messages(DAY2, ["a"], channel="in_app"),
            messages(DAY2, ["a"], channel="in_app", campaign="CP_02"),
        ]
    )
    planned_day(sqlite_store, frame)
    clock = Clock(NOON)
    parts = dispatcher(sqlite_store, settings(max_per_learner=1), clock, tmp_path / "f.jsonl")
    # When dispatched
    summary, _ = dispatch(parts, DispatchOptions())
    # Then one went and the other waits until the first leaves the window
    assert (summary.sent, summary.deferred) == (1, 1)
    waiting = sqlite_store.outbox_frame(states=[PENDING])
    assert waiting["next_attempt_at"].tolist() == [NOON + timedelta(hours=24)]
    # When a day has passed, Then it goes
    clock.now = NOON + timedelta(hours=24, minutes=1)
    assert dispatch(parts, DispatchOptions())[0].sent == 1


def test_a_dry_run_renders_and_counts_and_writes_nothing(sqlite_store, tmp_path):
    # Given three due messages on two channels and one due three days later
    frame = pd.concat(
        [
            messages(DAY2, ["a", "b"], steps=(0, 1), delay_days=3),
            messages(DAY2, ["c"], channel="push"),
        ]
    )
    planned_day(sqlite_store, frame)
    before = sqlite_store.outbox_frame()
    parts = dispatcher(sqlite_store, settings(), Clock(NOON), tmp_path / "f.jsonl")
    # When dry-run for the email channel and then for all
    email, _ = dispatch(parts, DispatchOptions(channels=("email",), dry_run=True))
    every, due = dispatch(parts, DispatchOptions(dry_run=True))
    # Then it counted what would go (step 1 is not due before day 5), and wrote nothing
    assert (email.rendered, dict(email.by_channel)) == (2, {"email": 2})
    assert (due, dict(every.by_channel)) == (3, {"email": 2, "push": 1})
    pd.testing.assert_frame_equal(sqlite_store.outbox_frame(), before)
    assert not (tmp_path / "f.jsonl").exists()


def test_options_are_checked():
    with pytest.raises(ValueError, match="fax"):
        DispatchOptions(channels=("fax",))
    with pytest.raises(ValueError, match="--limit 0"):
        DispatchOptions(limit=0)


def test_two_dispatchers_at_once_deliver_each_message_exactly_once(store, tmp_path):
    # Given 60 due webhook messages and a receiver counting each message's tries
    learners = [f"L{number:02d}" for number in range(60)]
    planned_day(store, messages(DAY2, learners, channel="webhook"))
    with WebhookReceiver(SECRET) as hook:
        config = settings(webhook_url=hook.url, batch_size=7, record_every=3)
        parts = dispatcher(store, config, Clock(NOON), tmp_path / "f.jsonl")
        results: list = []

        def run() -> None:
            results.append(dispatch(parts, DispatchOptions())[0])

        # When two dispatchers run at the same time
        workers = [threading.Thread(target=run) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    # Then every message arrived exactly once and both runs' counts add up
    assert sorted(body["customer_id"] for body in hook.bodies) == learners
    assert set(hook.tries.values()) == {1}
    assert sum(result.sent for result in results) == 60
    assert set(store.outbox_frame()["state"]) == {SENT}


def test_a_dispatcher_that_died_mid_send_leaves_its_messages_to_the_next_after_the_lease(
    sqlite_store, tmp_path
):
    # Given a dispatcher that claimed a's message and died before recording anything
    planned_day(sqlite_store, messages(DAY2, ["a", "b"]))
    lease = timedelta(seconds=DispatchSettings().lease_s)
    claimed = sqlite_store.claim_messages(
        "dead-one", data_day=DAY2, now=NOON, channels=None, lease=lease, limit=1
    )
    clock = Clock(NOON + timedelta(seconds=1))
    with SmtpReceiver() as smtp:
        parts = dispatcher(sqlite_store, settings(smtp_port=smtp.port), clock, tmp_path / "f")
        # When another dispatcher runs within the lease, Then it sends only the other message
        assert dispatch(parts, DispatchOptions())[0].sent == 1
        # When it runs after the lease, Then the claimed message goes too (at least once)
        clock.now = NOON + lease + timedelta(seconds=1)
        assert dispatch(parts, DispatchOptions())[0].sent == 1
    assert {mail["Idempotency-Key"] for mail in smtp.mails} == {
        claimed[0]["message_id"],
        *set(sqlite_store.outbox_frame()["message_id"]),
    }
    assert set(sqlite_store.outbox_frame()["state"]) == {SENT}


def test_a_dispatch_stopped_midway_keeps_what_it_sent_and_gives_the_rest_back(
    sqlite_store, tmp_path
):
    # Given four due messages and a renderer that breaks down on the third
    planned_day(sqlite_store, messages(DAY2, ["a", "b", "c", "d"], channel="in_app"))
    calls: list[str] = []

    def breaking(template_id, channel, variant, context):
        calls.append(context["name"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a run
        return render(template_id, channel, variant, context)

    config = settings()
    parts = Dispatcher(
        store=sqlite_store, settings=config, clock=Clock(NOON), render=breaking,
        open_sinks=lambda channels: build_sinks(config, tmp_path / "f.jsonl", channels),
    )  # fmt: skip
    # When dispatched, Then the interrupt goes through
    with pytest.raises(KeyboardInterrupt):
        dispatch(parts, DispatchOptions())
    # And the two sent are recorded sent; the other two are pending and claimable at once
    stored = sqlite_store.outbox_frame()
    assert sorted(stored["state"]) == [PENDING, PENDING, SENT, SENT]
    assert stored["claimed_by"].isna().all()
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 2
    due = sqlite_store.due_messages(
        data_day=DAY2, now=NOON, channels=None, lease=timedelta(seconds=config.lease_s)
    )
    assert len(due) == 2


def test_a_template_that_cannot_render_fails_its_message_not_the_run(sqlite_store, tmp_path):
    # Given two due messages, one of them with a template that does not exist
    frame = pd.concat(
        [
            messages(DAY2, ["a"], channel="in_app", template="welcome"),
            messages(DAY2, ["b"], channel="in_app", template="no_such"),
        ]
    )
    planned_day(sqlite_store, frame)

    def strict(template_id, channel, variant, context):
        if template_id == "no_such":
            raise LookupError(f"template {template_id}.{channel}.j2 not found")
        return render(template_id, channel, variant, context)

    config = settings()
    parts = Dispatcher(
        store=sqlite_store, settings=config, clock=Clock(NOON), render=strict,
        open_sinks=lambda channels: build_sinks(config, tmp_path / "f.jsonl", channels),
    )  # fmt: skip
    # When dispatched, Then a is sent and b failed with the reason, to be retried
    summary, _ = dispatch(parts, DispatchOptions())
    assert (summary.sent, summary.failed) == (1, 1)
    failed = sqlite_store.outbox_frame(states=[FAILED]).iloc[0]
    assert failed["customer_id"] == "b" and "rendering no_such" in failed["last_error"]
