"""The service's day answers over time (``serving.app.answer_keeper``): loading, answering whole
requests, a newer day, one builder among workers, the reasons warm-up.

The keeper's tests use a copy of the served workspace's snapshot and a fresh SQLite store.
"""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from serving.app.answer_keeper import AnswerKeeper, ReasonOptions
from serving.app.answers import answers_tag, load_day_answers
from serving.infra.answers_file import answers_path, build_lock
from tests.serving.batches import tag_learner


def test_the_keeper_answers_whole_requests_and_only_those_it_holds(
    data_dir, sqlite_store, champion, ruleset, day
):
    # given a keeper on the snapshot and an empty store (every learner is new)
    as_of, features, _ = day
    keeper = AnswerKeeper(data_dir, champion=champion, ruleset=ruleset, store=sqlite_store)
    ids = list(features["customer_id"].iloc[:3])
    # when whole requests are answered
    records = keeper.answer(ids, as_of)
    # then each learner gets their record, new learners with no current tag
    assert [record["customer_id"] for record in records] == ids
    assert all(record["current_tag"] is None for record in records)
    # and a request with one learner it cannot answer, or for another day, goes to the scorer
    assert keeper.answer([*ids, "nobody-by-this-id"], as_of) is None
    assert keeper.answer(ids, as_of - timedelta(days=1)) is None


def test_the_keeper_notices_a_learner_whose_state_moved(
    data_dir, sqlite_store, champion, ruleset, day
):
    # given a keeper built while a learner was new
    as_of, features, _ = day
    keeper = AnswerKeeper(data_dir, champion=champion, ruleset=ruleset, store=sqlite_store)
    customer_id = features["customer_id"].iloc[5]
    assert keeper.answer([customer_id], as_of) is not None
    # when the store learns their tag (a move applied through the API)
    tag_learner(sqlite_store, customer_id, "ST_002", as_of)
    # then the keeper no longer answers for them: the scorer decides on the new state
    assert keeper.answer([customer_id], as_of) is None


def test_the_keeper_builds_the_answers_of_a_newer_snapshot(
    data_dir, sqlite_store, champion, ruleset, day
):
    # given a keeper on the snapshot, and the batch job's snapshot of the next day appearing
    as_of, features, _ = day
    clock = iter(np.arange(0.0, 1000.0, 100.0))
    keeper = AnswerKeeper(
        data_dir, champion=champion, ruleset=ruleset, store=sqlite_store, clock=lambda: next(clock)
    )
    next_day = as_of + timedelta(days=1)
    features.assign(as_of=pd.Timestamp(next_day)).to_parquet(
        data_dir / "features" / f"as_of={next_day}.parquet"
    )
    ids = list(features["customer_id"].iloc[:2])
    # when asked about the next day, the keeper sends the request on and looks (in background)
    assert keeper.answer(ids, next_day) is None
    keeper.refresh()  # what the background look does, here in the foreground
    # then it answers for the next day
    assert keeper.current.as_of == next_day
    assert [record["as_of"] for record in keeper.answer(ids, next_day)] == [str(next_day)] * 2
    assert not keeper.refresh()  # nothing newer now


def test_no_snapshot_means_no_answers(tmp_path, sqlite_store, champion, ruleset):
    # given a data directory where the batch job has not run yet
    # when the answers are loaded, then there are none (every request goes to the scorer)
    assert (
        load_day_answers(tmp_path, champion=champion, ruleset=ruleset, store=sqlite_store) is None
    )
    keeper = AnswerKeeper(tmp_path, champion=champion, ruleset=ruleset, store=sqlite_store)
    assert keeper.current is None and keeper.answer(["C0000001"], date(2026, 5, 20)) is None


def test_one_process_builds_a_missing_file_the_others_answer_on_demand(
    data_dir, sqlite_store, champion, ruleset, day
):
    # given another worker process building the day's answers file (it holds the lock)
    as_of, features, _ = day
    path = answers_path(data_dir, as_of, answers_tag(champion.version, ruleset))
    with build_lock(path) as held:
        assert held
        # when this worker starts, then it builds nothing and has no answers yet
        keeper = AnswerKeeper(data_dir, champion=champion, ruleset=ruleset, store=sqlite_store)
        assert keeper.current is None and not path.exists()
    # when the lock is free, a background start builds the file and then answers from it
    keeper = AnswerKeeper(
        data_dir, champion=champion, ruleset=ruleset, store=sqlite_store, background=True
    )
    deadline = time.monotonic() + 120
    while keeper.current is None and time.monotonic() < deadline:
        time.sleep(0.1)
    ids = list(features["customer_id"].iloc[:2])
    assert path.is_file() and [r["customer_id"] for r in keeper.answer(ids, as_of)] == ids


def test_the_keeper_calls_after_warm_once_the_day_s_reasons_are_kept(
    data_dir, sqlite_store, champion, ruleset
):
    # given a keeper warming 12 learners' reasons, told what to do once it has
    cached_when_called: list[int] = []
    called = threading.Event()

    def after_warm() -> None:
        cached_when_called.append(len(keeper.current._cache))
        called.set()

    options = ReasonOptions(warm_reasons=12, after_warm=after_warm)
    # when it starts
    keeper = AnswerKeeper(
        data_dir, champion=champion, ruleset=ruleset, store=sqlite_store, reasons=options
    )
    # then after_warm runs once, after the 12 learners' reasons are kept
    assert called.wait(120)
    time.sleep(0.2)
    assert cached_when_called == [12]
