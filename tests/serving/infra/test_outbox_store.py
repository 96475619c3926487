"""The transactional outbox on SQLite and PostgreSQL (``serving.infra.outbox_store``).

A day's campaign messages commit or roll back with its transitions (a failure mid-write, a
process killed inside the transaction), a rerun adds nothing, the control group is recorded
as suppressed, dispatchers never claim the same row, feedback is recorded once per kind.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, text

import serving.infra.outbox_store as outbox_store_module
from serving.core.messages import CANCELLED, FAILED, PENDING, SENT, SUPPRESSED
from serving.core.problems import NotFound
from serving.infra.store import StateStore
from serving.infra.tables import Outbox
from tests.serving.batches import FIRST_DAY, apply, at, decisions
from tests.serving.infra.test_state_sql import migrate_store
from tests.serving.infra.test_store import child_error, wait_for
from tests.serving.outbox_fixtures import (
    apply_with_plan,
    messages,
    plan,
    run_paused_planned_batch,
)

DAY1, DAY2, DAY3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
WALL = datetime(2024, 3, 3, 9, tzinfo=UTC)
LEASE = timedelta(minutes=5)
MOVES = [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_004"), ("c", "ST_001", "ST_001")]


def states(store: StateStore) -> dict[str, str]:
    """customer_id:step -> state of every message."""
    frame = store.outbox_frame()
    keys = frame["customer_id"] + ":" + frame["step"].astype(str)
    return dict(zip(keys, frame["state"], strict=True))


def test_a_days_messages_are_written_with_its_transitions_and_the_control_is_suppressed(store):
    # Given day 1, and day 2 moving a and b with a two-step campaign for a, b and control z
    apply(store, DAY1, FIRST_DAY)
    frame = messages(DAY2, ["a", "b", "z"], steps=(0, 1), delay_days=3, control=("z",))
    # When day 2 is applied with the plan
    record = apply_with_plan(store, DAY2, MOVES, plan(frame))
    # Then every message is in the outbox: the control's suppressed, the others pending
    assert states(store) == {
        "a:0": PENDING, "a:1": PENDING, "b:0": PENDING, "b:1": PENDING,
        "z:0": SUPPRESSED, "z:1": SUPPRESSED,
    }  # fmt: skip
    stored = store.outbox_frame().set_index("message_id")
    assert stored.loc[frame["message_id"][1], "due_on"] == pd.Timestamp(DAY2 + timedelta(days=3))
    assert (stored["run_id"] == "run-2024-03-02").all()
    assert record.summary["messages"] == {
        "planned": 6, "inserted": 6, "suppressed": 2, "cancelled": 0
    }  # fmt: skip
    assert store.runs().set_index("run_id").loc[record.run_id, "summary"]["messages"]["planned"]
    # And the planner's reads see them from the next day on: pending pairs, window counts
    pending = store.pending_pairs(DAY3)
    assert dict(zip(pending["customer_id"], pending["messages"], strict=True)) == {"a": 2, "b": 2}
    assert store.pending_pairs(DAY2).empty  # the day itself is left out (a replace plans it)
    counted = store.messages_in_window(DAY3, {"CP_01": 2})
    assert dict(zip(counted["customer_id"], counted["messages"], strict=True)) == {
        "a": 2, "b": 2, "z": 2
    }  # fmt: skip
    assert store.messages_in_window(DAY2, {"CP_01": 2}).empty  # the day itself is left out


def test_a_rerun_adds_nothing_and_a_replace_keeps_what_was_sent(store):
    # Given day 2 applied with a plan, and a's message sent since
    apply(store, DAY1, FIRST_DAY)
    day_plan = plan(pd.concat([messages(DAY2, ["a"]), messages(DAY2, ["b"], channel="push")]))
    apply_with_plan(store, DAY2, MOVES, day_plan)
    claimed = store.claim_messages(
        "d1", data_day=DAY2, now=WALL, channels=("email",), lease=LEASE, limit=5
    )
    assert [row["customer_id"] for row in claimed] == ["a"]
    store.record_sent(claimed[0]["message_id"], "d1", subject="s", body="b", now=WALL)
    # When the completed day is run again with the same plan
    apply_with_plan(store, DAY2, MOVES, day_plan, run_id="again")
    # Then nothing was added
    assert len(store.outbox_frame()) == 2
    # When the day is replaced with a plan for b and c only
    record = apply_with_plan(
        store, DAY2, MOVES, plan(messages(DAY2, ["b", "c"])), run_id="redo", replace=True
    )
    # Then the sent message stays sent, the unsent one is replanned, c's is new
    assert states(store) == {"a:0": SENT, "b:0": PENDING, "c:0": PENDING}
    assert record.summary["messages"]["inserted"] == 2
    assert set(store.outbox_frame()["run_id"]) == {"run-2024-03-02", "redo"}


def test_a_replace_keeps_a_sent_message_whose_id_has_an_older_form(store):
    # Given day 2 planned with ids of the form before the day led them (a bare hash): two steps
    # three days apart for a by email and for b by push; a's first step sent since
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, plan(_two_steps_for_a_and_b()))
    with store._engine.begin() as conn:  # 'msg-20240302-<hash>' -> 'msg-<hash>'
        conn.execute(text("UPDATE outbox SET message_id = 'msg-' || substr(message_id, 14)"))
    assert all(len(key) == len("msg-") + 20 for key in store.outbox_frame()["message_id"])
    claimed = store.claim_messages(
        "d1", data_day=DAY2, now=WALL, channels=("email",), lease=LEASE, limit=5
    )
    assert [(row["customer_id"], row["step"]) for row in claimed] == [("a", 0)]
    store.record_sent(claimed[0]["message_id"], "d1", subject="s", body="b", now=WALL)
    # When the day is replaced with the same messages under today's ids
    redo = plan(_two_steps_for_a_and_b())
    record = apply_with_plan(store, DAY2, MOVES, redo, run_id="redo", replace=True)
    # Then a's sent step is not planned again; the three unsent ones are, under today's ids
    assert states(store) == {"a:0": SENT, "a:1": PENDING, "b:0": PENDING, "b:1": PENDING}
    assert len(store.outbox_frame()) == 4
    assert record.summary["messages"]["inserted"] == 3


def _two_steps_for_a_and_b() -> pd.DataFrame:
    return pd.concat(
        [
            messages(DAY2, ["a"], steps=(0, 1), delay_days=3),
            messages(DAY2, ["b"], steps=(0, 1), delay_days=3, channel="push"),
        ]
    )


def test_the_inserted_count_leaves_out_messages_already_there(store):
    # Given day 2 applied with messages for a and b, a's since sent
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, plan(messages(DAY2, ["a", "b"])))
    claimed = store.claim_messages(
        "d1", data_day=DAY2, now=WALL, channels=None, lease=LEASE, limit=1
    )
    store.record_sent(claimed[0]["message_id"], "d1", subject="s", body="b", now=WALL)
    # When the day is replaced with a plan for a, b and c (a's id is already in the outbox)
    record = apply_with_plan(
        store, DAY2, MOVES, plan(messages(DAY2, ["a", "b", "c"])), run_id="redo", replace=True
    )
    # Then the summary counts the two that went in, not the three planned
    assert record.summary["messages"]["planned"] == 3
    assert record.summary["messages"]["inserted"] == 2


@pytest.mark.parametrize(
    ("days_ago", "state", "counted"),
    [
        (1, SENT, True),  # yesterday: inside a 30-day window
        (29, SUPPRESSED, True),  # the control's would-be messages count too
        (30, SENT, False),  # out of the window
        (10, CANCELLED, False),  # cancelled messages were never sent
        (0, PENDING, False),  # the day being planned is left out (a replace plans it again)
    ],
)
def test_messages_in_window_count_a_campaigns_messages_within_its_cap_window(
    store, days_ago, state, counted
):
    # Given one message of CP_09 (30-day window) and one of CP_14 (365 days) planned days_ago
    today = DAY1 + timedelta(days=400)
    for campaign in ("CP_09", "CP_14"):
        _put_message(store, today - timedelta(days=days_ago), campaign, state)
    # When the planner's counts are read for today
    frame = store.messages_in_window(today, {"CP_09": 30, "CP_14": 365, "CP_01": 7})
    # Then CP_09's message counts only inside its window; CP_14's window holds all but cancels
    found = dict(zip(frame["campaign_id"], frame["messages"], strict=True))
    assert found.get("CP_09", 0) == (1 if counted else 0)
    assert found.get("CP_14", 0) == (0 if state == CANCELLED or days_ago == 0 else 1)


def test_messages_in_window_ignore_campaigns_without_a_window(store):
    _put_message(store, DAY1, "CP_99", PENDING)
    assert store.messages_in_window(DAY2, {"CP_09": 30}).empty
    assert store.messages_in_window(DAY2, {}).empty


def test_the_window_counts_of_some_pairs_are_the_full_counts_of_those_pairs(store):
    # Given learners' messages of CP_09 (30-day window) and CP_14 (365 days) on several days,
    # in several states, and the day being planned already holding one (a replaced day)
    today = DAY1 + timedelta(days=400)
    outbox = [
        ("a", "CP_09", 29, SENT), ("a", "CP_09", 3, PENDING), ("a", "CP_14", 364, SENT),
        ("b", "CP_09", 30, SENT), ("b", "CP_14", 10, CANCELLED), ("c", "CP_09", 1, SENT),
        ("d", "CP_09", 0, PENDING), ("d", "CP_99", 2, SENT), ("e", "CP_14", 2, SUPPRESSED),
    ]  # fmt: skip
    for learner, campaign, days_ago, state in outbox:
        _put_message(store, today - timedelta(days=days_ago), campaign, state, learner)
    windows = {"CP_09": 30, "CP_14": 365}
    full = store.messages_in_window(today, windows)
    # When only some pairs are asked for: c left out; d's and x's pairs have nothing counted
    pairs = pd.DataFrame(
        [("a", "CP_09"), ("a", "CP_14"), ("b", "CP_09"), ("b", "CP_14"), ("d", "CP_09"),
         ("d", "CP_99"), ("e", "CP_14"), ("x", "CP_09"), ("a", "CP_09")],
        columns=["customer_id", "campaign_id"],
    )  # fmt: skip
    narrowed = store.messages_in_window(today, windows, pairs)
    # Then each asked pair counts what the full read counts, and no other pair comes
    counted = {(r.customer_id, r.campaign_id): r.messages for r in narrowed.itertuples()}
    assert counted == {("a", "CP_09"): 2, ("a", "CP_14"): 1, ("e", "CP_14"): 1}
    everything = {(r.customer_id, r.campaign_id): r.messages for r in full.itertuples()}
    assert counted == {pair: n for pair, n in everything.items() if pair[0] != "c"}
    assert narrowed.dtypes.to_dict() == full.dtypes.to_dict()
    # And no pair, or only pairs of campaigns without a window, count nothing
    assert store.messages_in_window(today, windows, pairs.iloc[:0]).empty
    assert store.messages_in_window(today, windows, pairs.iloc[5:6]).empty


@pytest.mark.parametrize("held", [True, False])
def test_the_planners_pair_frames_hold_text_ids_and_int64_counts(store, held):
    # Given a pending message of a in CP_09 yesterday, or an empty outbox
    if held:
        _put_message(store, DAY2 - timedelta(days=1), "CP_09", PENDING)
    pairs = pd.DataFrame({"customer_id": ["a", "b"], "campaign_id": ["CP_09", "CP_09"]})
    # When the planner's three pair frames are read for DAY2
    frames = [
        store.pending_pairs(DAY2),
        store.messages_in_window(DAY2, {"CP_09": 30}),
        store.messages_in_window(DAY2, {"CP_09": 30}, pairs),
    ]
    # Then each is (customer_id, campaign_id) as pandas text columns (Arrow's, read by ADBC
    # on SQLite or built from the driver's rows on PostgreSQL) and an int64 count
    rows = [("a", "CP_09", 1)] if held else []
    expected = pd.DataFrame(
        {
            "customer_id": pd.Series([row[0] for row in rows], dtype="str"),
            "campaign_id": pd.Series([row[1] for row in rows], dtype="str"),
            "messages": pd.Series([row[2] for row in rows], dtype="int64"),
        }
    )
    for frame in frames:
        pd.testing.assert_frame_equal(frame, expected, check_exact=True)
        assert all(type(value) is str for value in frame["customer_id"])


def test_pending_pairs_count_each_pairs_sendable_messages_before_the_day(store):
    # Given a's CP_09 messages of two days and its CP_01 one, b's failed CP_09 one, and
    # messages that are not pending before DAY3: sent, cancelled, or planned on DAY3 itself
    for day, campaign, state, learner in [
        (DAY1, "CP_09", PENDING, "a"), (DAY1, "CP_01", PENDING, "a"),
        (DAY2, "CP_09", FAILED, "b"), (DAY2, "CP_09", PENDING, "a"),
        (DAY2, "CP_09", SENT, "c"), (DAY2, "CP_09", CANCELLED, "d"),
        (DAY3, "CP_09", PENDING, "e"),
    ]:  # fmt: skip
        _put_message(store, day, campaign, state, learner)
    # When the planner's pending pairs are read for DAY3
    pending = store.pending_pairs(DAY3)
    # Then each sendable pair comes once with its number of messages
    rows = pending.sort_values(["customer_id", "campaign_id"]).itertuples(index=False)
    assert [tuple(row) for row in rows] == [("a", "CP_01", 1), ("a", "CP_09", 2), ("b", "CP_09", 1)]


def test_the_window_counts_of_pairs_leave_no_table_behind(store):
    # Given a message of a in CP_09, counted for its pair twice over one store
    _put_message(store, DAY1, "CP_09", SENT)
    pairs = pd.DataFrame({"customer_id": ["a"], "campaign_id": ["CP_09"]})
    for _ in range(2):
        # When counted, Then the count is the same each time (the temporary table went)
        counted = store.messages_in_window(DAY2, {"CP_09": 30}, pairs)
        assert counted["messages"].tolist() == [1]


def _put_message(
    store: StateStore, day: date, campaign: str, state: str, learner: str = "a"
) -> None:
    """One outbox row of ``learner``, as a dispatcher would have left it."""
    row = messages(day, [learner], campaign=campaign).assign(
        state=state, tries=0, run_id=f"run-{day}", created_at=at(day)
    )
    with store._engine.begin() as conn:
        conn.execute(Outbox.__table__.insert(), row.to_dict("records"))


def test_cancels_cancel_only_messages_not_yet_sent_and_planned_before_the_day(store):
    # Given day 2's two-step campaign for a and b, a's first step sent
    apply(store, DAY1, FIRST_DAY)
    frame = messages(DAY2, ["a", "b"], steps=(0, 1), delay_days=3)
    apply_with_plan(store, DAY2, MOVES, plan(frame))
    first = frame["message_id"][0]
    claimed = store.claim_messages(
        "d1", data_day=DAY2, now=WALL, channels=None, lease=LEASE, limit=5
    )
    assert {row["customer_id"] for row in claimed} == {"a", "b"}  # step 1 is due on day 5
    store.record_sent(first, "d1", subject="s", body="b", now=WALL)
    # When day 3 enrols a again and cancels a's CP_01 messages (a left the campaign's tag)
    stay = [("a", "ST_004", "ST_004")]
    again = messages(DAY3, ["a"], steps=(2,))  # a's new message, planned today
    record = apply_with_plan(store, DAY3, stay, plan(again, [("a", "CP_01"), ("x", "CP_01")]))
    # Then the sent one stays sent, the pending one is cancelled, today's and b's are untouched
    assert states(store) == {
        "a:0": SENT, "a:1": CANCELLED, "a:2": PENDING, "b:0": PENDING, "b:1": PENDING
    }  # fmt: skip
    assert record.summary["messages"]["cancelled"] == 1


def test_a_failure_after_the_messages_rolls_back_the_whole_day(store, monkeypatch):
    # Given day 1, and a cancellation that breaks after day 2's messages went in
    apply(store, DAY1, FIRST_DAY)
    transitions_before = len(store.transitions_frame())

    def broken_cancel(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outbox_store_module, "cancel_pairs", broken_cancel)
    # When day 2 is applied, Then the error propagates
    with pytest.raises(RuntimeError, match="disk full"):
        apply_with_plan(store, DAY2, MOVES, plan(messages(DAY2, ["a", "b"])))
    # And neither the messages nor the transitions nor the scores of day 2 are there
    assert store.outbox_frame().empty
    assert len(store.transitions_frame()) == transitions_before
    assert store.scores_frame(DAY2).empty
    assert store.runs().set_index("as_of").loc[pd.Timestamp(DAY2), "status"] == "failed"
    # And a rerun writes the day with its messages
    monkeypatch.undo()
    apply_with_plan(store, DAY2, MOVES, plan(messages(DAY2, ["a", "b"])), run_id="retry")
    assert states(store) == {"a:0": PENDING, "b:0": PENDING}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channel": "fax"}, "channel"),
        ({"planned_on": pd.Timestamp(DAY1)}, "planned on another day"),
        ({"message_id": "msg-made-up"}, "id other than message_key"),
        ({"context": "[1, 2]"}, "not a JSON object"),
    ],
)
def test_a_plan_breaking_the_contract_is_refused_before_anything_is_written(
    sqlite_store, change, message
):
    # Given day 1, and a plan for day 2 with one bad row
    apply(sqlite_store, DAY1, FIRST_DAY)
    frame = messages(DAY2, ["a", "b"])
    for column, value in change.items():
        frame.loc[1, column] = value
    # When applied, Then the error names what is wrong and nothing of day 2 is written
    with pytest.raises(ValueError, match=message):
        apply_with_plan(sqlite_store, DAY2, MOVES, plan(frame))
    assert sqlite_store.outbox_frame().empty
    assert pd.Timestamp(DAY2) not in set(sqlite_store.runs()["as_of"])


def test_two_dispatchers_never_claim_the_same_message_and_a_lapsed_claim_is_taken_again(store):
    # Given five due messages
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, plan(messages(DAY2, ["a", "b", "c", "d", "e"])))
    claims: dict[str, list[str]] = {}

    def claim(token: str) -> None:
        rows = store.claim_messages(
            token, data_day=DAY2, now=WALL, channels=None, lease=LEASE, limit=3
        )
        claims[token] = [row["message_id"] for row in rows]

    # When two dispatchers claim at the same time
    workers = [threading.Thread(target=claim, args=(token,)) for token in ("d1", "d2")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    # Then they hold disjoint messages, all five between them
    assert not set(claims["d1"]) & set(claims["d2"])
    assert len(claims["d1"]) + len(claims["d2"]) == 5
    # And a claimed message is not due again until its lease lapses
    assert store.due_messages(data_day=DAY2, now=WALL, channels=None, lease=LEASE).empty
    later = store.due_messages(data_day=DAY2, now=WALL + 2 * LEASE, channels=None, lease=LEASE)
    assert len(later) == 5
    # And a message due after the latest batch day is not due yet
    assert store.due_messages(data_day=DAY1, now=WALL + 2 * LEASE, channels=None, lease=LEASE).empty


def test_feedback_is_recorded_once_per_kind_and_only_for_known_messages(store):
    # Given a message in the outbox
    apply(store, DAY1, FIRST_DAY)
    frame = messages(DAY2, ["a"])
    apply_with_plan(store, DAY2, MOVES, plan(frame))
    message_id = frame["message_id"][0]
    # When it is opened twice and clicked once
    first = store.record_feedback(message_id, "opened", source="api", now=WALL)
    again = store.record_feedback(message_id, "opened", source="api", now=WALL + LEASE)
    clicked = store.record_feedback(message_id, "clicked", source="api", now=WALL)
    # Then the repeat changed nothing
    assert (first, again, clicked) == (True, False, True)
    feedback = store.feedback_frame()
    assert feedback["kind"].tolist() == ["opened", "clicked"]
    assert feedback["recorded_at"].iloc[0] == WALL
    # And an unknown message is named
    with pytest.raises(NotFound, match="msg-nope"):
        store.record_feedback("msg-nope", "opened", source="api", now=WALL)


def test_counts_by_state_and_channel(sqlite_store):
    # Given email for a and b (b in the control group) and a push for c
    apply(sqlite_store, DAY1, FIRST_DAY)
    frame = pd.concat(
        [messages(DAY2, ["a", "b"], control=("b",)), messages(DAY2, ["c"], channel="push")]
    )
    apply_with_plan(sqlite_store, DAY2, MOVES, plan(frame))
    # When counted, Then each (state, channel) has its number
    counts = sqlite_store.outbox_counts()
    assert [tuple(row) for row in counts.itertuples(index=False)] == [
        ("pending", "email", 1), ("pending", "push", 1), ("suppressed", "email", 1)
    ]  # fmt: skip
    assert sqlite_store.outbox_counts(until=DAY1).empty


# ---- a process killed inside the batch transaction ------------------------------------------


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.BaseContext:
    """Children forked from a server that imported the store once (see test_store)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["tests.serving.outbox_fixtures", "pandera.backends.pandas.register"]
    )
    return context


def test_a_batch_killed_after_writing_its_messages_leaves_neither_messages_nor_moves(
    store, tmp_path, processes
):
    # Given day 1, and day 2 with its plan paused in another process after the messages went in
    apply(store, DAY1, FIRST_DAY)
    before = (store.state_frame(), store.transitions_frame())
    day_plan = plan(messages(DAY2, ["a", "b"]))
    job = {"as_of": DAY2, "decisions": decisions(DAY2, MOVES), "plan": day_plan}
    pd.to_pickle(job, tmp_path / "job.pkl")
    child = processes.Process(target=run_paused_planned_batch, args=(store.url, str(tmp_path), 120))
    child.start()
    wait_for(tmp_path / "inside", child)
    # When it is killed there (SIGKILL)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL, child_error(tmp_path)
    # Then no message and no move of day 2 is there
    assert store.outbox_frame().empty
    after = (store.state_frame(), store.transitions_frame())
    for old, new in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(old, new)
    # And a rerun writes both
    apply_with_plan(store, DAY2, MOVES, day_plan, run_id="rerun")
    assert states(store) == {"a:0": PENDING, "b:0": PENDING}
    assert store.state_frame().set_index("customer_id").loc["a", "tag"] == "ST_004"


# ---- migration ----------------------------------------------------------------------------------


def test_migration_0003_keeps_old_scores_and_downgrades_with_data(store_url):
    # Given a store at 0002 with a batch day
    migrate_store(store_url, "0002_data_clock")
    old = StateStore(store_url, auto_migrate=False)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scores (customer_id, as_of, priority, control, run_id) "
                "VALUES ('old', :day, 'P1', false, 'r1')"
            ),
            {"day": DAY1},
        )
    # When upgraded to head
    migrate_store(store_url, "head")
    # Then the old score reads with no campaign, and a day with a plan can be written
    scores = old.scores_frame()
    assert scores["campaign_id"].isna().all() and scores["priority"].tolist() == ["P1"]
    apply(old, DAY1, FIRST_DAY, run_id="r-day1")
    apply_with_plan(old, DAY2, MOVES, plan(messages(DAY2, ["a"])))
    old.record_feedback(messages(DAY2, ["a"])["message_id"][0], "opened", source="t", now=WALL)
    # When downgraded to 0002, Then the outbox tables are gone and every score row stays
    migrate_store(store_url, "0002_data_clock", down=True)
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
                if engine.dialect.name == "postgresql"
                else text("SELECT name FROM sqlite_master WHERE type = 'table'")
            ).scalars()
        )
        assert not {"outbox", "campaign_feedback"} & tables
        assert conn.execute(text("SELECT count(*) FROM scores")).scalar_one() == 1 + 3 + 3
    engine.dispose()
    old.close()


def test_scores_keep_the_campaign_channel_and_behaviour_tags_the_decisions_carry(store):
    # Given day 1 whose decisions carry a campaign for a and b, none for c
    frame = decisions(DAY1, FIRST_DAY)
    frame["campaign_id"] = ["CP_03", "CP_07", None]
    frame["channel"] = ["push", "email", None]
    frame["behaviour_tags"] = ["BT_002,BT_005", "", None]
    # When applied
    store.apply_batch(
        DAY1, frame, None, run_id="r1", model_version=None, rules_only=True, now=at(DAY1)
    )
    # Then each score row says so (the tags as the decisions give them: sorted ids joined by ",")
    scores = store.scores_frame(DAY1).set_index("customer_id")
    assert scores["campaign_id"].tolist()[:2] == ["CP_03", "CP_07"]
    assert scores["channel"].tolist()[:2] == ["push", "email"]
    assert scores.loc["a", "behaviour_tags"] == "BT_002,BT_005"
    assert scores.loc["b", "behaviour_tags"] == ""
    assert scores.loc[["c"], ["campaign_id", "channel", "behaviour_tags"]].isna().all(axis=None)


PAIR_INDEX = "ix_outbox_customer_id_campaign_id_planned_on_state"
DUE_INDEX = "ix_outbox_state_due_on"
SENDABLE_INDEX = "ix_outbox_state_due_on_planned_on_customer_id_campaign_id"


def outbox_indexes(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {index["name"] for index in inspect(engine).get_indexes("outbox")}
    finally:
        engine.dispose()


def test_migration_0005_indexes_the_planners_reads_and_downgrades_with_the_rows(store_url):
    # Given a store at 0004 with a pending message of a in CP_09
    migrate_store(store_url, "0004_lifetime_value")
    old = StateStore(store_url, auto_migrate=False)
    _put_message(old, DAY1, "CP_09", PENDING)
    assert DUE_INDEX in outbox_indexes(store_url)
    # When upgraded to 0005
    migrate_store(store_url, "0005_outbox_pair_index")
    # Then the pair index is there, the (state, due_on) one widened, and the planner reads a
    indexes = outbox_indexes(store_url)
    assert {PAIR_INDEX, SENDABLE_INDEX} <= indexes and DUE_INDEX not in indexes
    pairs = pd.DataFrame({"customer_id": ["a"], "campaign_id": ["CP_09"]})
    assert old.messages_in_window(DAY2, {"CP_09": 30}, pairs)["messages"].tolist() == [1]
    assert old.pending_pairs(DAY2)["customer_id"].tolist() == ["a"]
    # When downgraded to 0004, Then its indexes are back and the message stays
    migrate_store(store_url, "0004_lifetime_value", down=True)
    indexes = outbox_indexes(store_url)
    assert DUE_INDEX in indexes and not {PAIR_INDEX, SENDABLE_INDEX} & indexes
    assert old.outbox_frame()["customer_id"].tolist() == ["a"]
    old.close()


LEARNER_INDEX = "ix_outbox_customer_id_campaign_id_planned_on_state_sent_at"
SENT_INDEX = "ix_outbox_customer_id_sent_at"


def test_migration_0006_makes_one_learner_index_of_two_and_downgrades_with_the_rows(store_url):
    # Given a store at 0005 with a message of a in CP_09 sent on DAY1
    migrate_store(store_url, "0005_outbox_pair_index")
    old = StateStore(store_url, auto_migrate=False)
    row = messages(DAY1, ["a"], campaign="CP_09").assign(
        state=SENT, tries=1, sent_at=at(DAY1), run_id="run-1", created_at=at(DAY1)
    )
    with old._engine.begin() as conn:
        conn.execute(Outbox.__table__.insert(), row.to_dict("records"))
    assert {PAIR_INDEX, SENT_INDEX} <= outbox_indexes(store_url)
    sent_before = old.sent_since(["a", "b"], at(DAY1) - timedelta(days=1))
    # When upgraded to head
    migrate_store(store_url, "head")
    # Then one index led by the learner replaces the two, and the reads find what they found
    indexes = outbox_indexes(store_url)
    assert LEARNER_INDEX in indexes and not {PAIR_INDEX, SENT_INDEX} & indexes
    assert old.sent_since(["a", "b"], at(DAY1) - timedelta(days=1)) == sent_before
    assert len(sent_before["a"]) == 1 and sent_before["b"] == []
    pairs = pd.DataFrame({"customer_id": ["a"], "campaign_id": ["CP_09"]})
    assert old.messages_in_window(DAY2, {"CP_09": 30}, pairs)["messages"].tolist() == [1]
    # When downgraded to 0005, Then its indexes are back and the message stays
    migrate_store(store_url, "0005_outbox_pair_index", down=True)
    indexes = outbox_indexes(store_url)
    assert {PAIR_INDEX, SENT_INDEX} <= indexes and LEARNER_INDEX not in indexes
    assert old.outbox_frame()["customer_id"].tolist() == ["a"]
    old.close()


def test_pairs_are_not_sent_to_the_server_when_no_message_falls_in_any_window(store):
    from sqlalchemy import event

    # Given an outbox whose only message is older than every window (a first load's outbox
    # is empty: the pairs, one per learner, would all count 0)
    _put_message(store, DAY1, "CP_09", SENT)
    today = DAY1 + timedelta(days=40)
    pairs = pd.DataFrame({"customer_id": ["a", "b"], "campaign_id": ["CP_09", "CP_09"]})
    statements: list[str] = []
    event.listen(store._engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *args: statements.append(sql))  # fmt: skip
    # When the pairs' window counts are read
    counted = store.messages_in_window(today, {"CP_09": 30}, pairs)
    # Then nothing is counted, and no temporary table of the pairs was made
    assert counted.empty and list(counted.columns) == ["customer_id", "campaign_id", "messages"]
    assert not [sql for sql in statements if "window_pairs" in sql]
    # And a message in the window is counted as before (the probe does not hide it)
    _put_message(store, today - timedelta(days=29), "CP_09", SENT)
    assert store.messages_in_window(today, {"CP_09": 30}, pairs)["messages"].tolist() == [1]


def test_the_measured_outbox_is_the_outbox_frame_of_its_columns_with_no_template_fields(store):
    # Given a day with a two-step campaign (z in the control) of which a's first message was
    # sent, and a later day with a message of another campaign for b
    apply(store, DAY1, FIRST_DAY)
    first = messages(DAY2, ["a", "b", "z"], steps=(0, 1), delay_days=3, control=("z",))
    apply_with_plan(store, DAY2, MOVES, plan(first))
    claimed = store.claim_messages(
        "d1", data_day=DAY2, now=WALL, channels=("email",), lease=LEASE, limit=1
    )
    store.record_sent(claimed[0]["message_id"], "d1", subject="s", body="b", now=WALL)
    apply_with_plan(store, DAY3, MOVES, plan(messages(DAY3, ["b"], campaign="CP_02")))
    columns = [
        "message_id", "planned_on", "due_on", "customer_id", "campaign_id", "step", "channel",
        "template_id", "variant", "control", "state",
    ]  # fmt: skip
    # When the campaign measurement reads the outbox, whole and up to day 2
    whole, until_day2 = store.measured_outbox(), store.measured_outbox(until=DAY2)
    # Then it is what outbox_frame gives of those columns (the same rows, order and types),
    # with an empty context, and the day bound keeps the planned days up to it
    expected = store.outbox_frame(columns=columns).assign(context="")
    pd.testing.assert_frame_equal(whole, expected)
    assert sorted(whole["state"].unique()) == [PENDING, SENT, SUPPRESSED]
    assert whole["control"].sum() == 2 and set(whole["campaign_id"]) == {"CP_01", "CP_02"}
    pd.testing.assert_frame_equal(until_day2, expected[expected["planned_on"] <= "2024-03-02"])
    assert len(until_day2) == 6
