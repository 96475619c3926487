"""The batch day's write: the feature snapshot written beside the campaign plan, its failure
failing the day before the commit, and the files and the store those of the two in turn."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from serving.app import batch_write
from serving.app.batch import BatchContext, BatchInputs, run_day
from serving.infra.store import StateStore
from tests.serving.fixtures import FIRST_DAY, NOW

WAIT_S = 20.0


class SnapshotFailed(Exception):
    """The snapshot's own failure."""


class InTurn(Executor):
    """Runs each job as it is submitted, on the caller's thread: the write as it was in turn."""

    def submit(self, fn, /, *args, **kwargs):
        job = Future()
        try:
            job.set_result(fn(*args, **kwargs))
        except Exception as error:
            job.set_exception(error)
        return job


def run(store, log, ruleset, data_dir=None, day=FIRST_DAY):
    """One rules-only day on the simulated log."""
    context = BatchContext(
        store=store, champion=None, ruleset=ruleset, run_id=f"run-{day}", now=NOW,
        data_dir=data_dir,
    )  # fmt: skip
    inputs = BatchInputs(events=log.events, customers=log.customers, validated=True)
    return run_day(day, inputs, context)


def store_contents(store: StateStore) -> dict[str, pd.DataFrame]:
    return {
        "state": store.state_frame(),
        "transitions": store.transitions_frame().drop(columns=["id", "created_at"]),
        "scores": store.scores_frame(),
        "outbox": store.outbox_frame().drop(columns=["id"], errors="ignore"),
        "runs": store.runs().drop(columns=["started_at", "finished_at"]),
    }


def files_of(data_dir: Path) -> dict[str, bytes]:
    """Every file under ``data_dir``, by path."""
    paths = [path for path in sorted(data_dir.rglob("*")) if path.is_file()]
    return {str(path.relative_to(data_dir)): path.read_bytes() for path in paths}


def test_the_snapshot_is_written_while_the_plan_runs(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given a snapshot that can only be written once the plan has started (in turn, the plan
    # would come after it: the wait fails)
    planning = threading.Event()
    plan, snapshot = batch_write.plan_day_campaigns, batch_write.write_feature_snapshot

    def planned(*args, **kwargs):
        planning.set()
        return plan(*args, **kwargs)

    def written(*args, **kwargs):
        assert planning.wait(WAIT_S), "the snapshot was written before the plan began"
        return snapshot(*args, **kwargs)

    monkeypatch.setattr(batch_write, "plan_day_campaigns", planned)
    monkeypatch.setattr(batch_write, "write_feature_snapshot", written)
    # when the day runs with a data directory
    result = run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    # then it completes with its snapshot
    assert result.run.status == "completed" and result.feature_snapshot.exists()


def test_a_failed_snapshot_fails_the_day_before_the_commit_even_when_the_plan_fails_too(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given day 1 completed, then a day 2 whose snapshot and plan both fail
    run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    before = store_contents(sqlite_store)

    def snapshot_fails(*args, **kwargs):
        raise SnapshotFailed("disk full")

    def plan_fails(*args, **kwargs):
        raise ValueError("no catalogue")

    monkeypatch.setattr(batch_write, "write_feature_snapshot", snapshot_fails)
    monkeypatch.setattr(batch_write, "plan_day_campaigns", plan_fails)
    # when day 2 runs, then the snapshot's own exception fails it
    with pytest.raises(SnapshotFailed, match="disk full"):
        run(sqlite_store, simulated_log, ruleset, tmp_path / "data", FIRST_DAY + timedelta(1))
    # and the store is as day 1 left it
    after = store_contents(sqlite_store)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)


def test_a_failed_snapshot_alone_fails_the_day_before_the_commit(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given a day whose snapshot fails while its plan succeeds
    def snapshot_fails(*args, **kwargs):
        raise SnapshotFailed("disk full")

    monkeypatch.setattr(batch_write, "write_feature_snapshot", snapshot_fails)
    # when the day runs, then the snapshot's own exception fails it, and nothing is committed
    with pytest.raises(SnapshotFailed, match="disk full"):
        run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    assert sqlite_store.runs().empty
    assert sqlite_store.state_frame().empty


def test_two_days_write_what_they_write_in_turn(simulated_log, ruleset, tmp_path, monkeypatch):
    # given two days written with the snapshot beside the plan, and the same two in turn
    def two_days(home: Path) -> tuple[dict[str, pd.DataFrame], dict[str, bytes]]:
        with StateStore(f"sqlite:///{home / 'state.db'}", scores_dir=home / "scores") as store:
            for day in (FIRST_DAY, FIRST_DAY + timedelta(1)):
                run(store, simulated_log, ruleset, home / "data", day)
            return store_contents(store), files_of(home / "data")

    beside = two_days(tmp_path / "beside")
    monkeypatch.setattr(batch_write, "ThreadPoolExecutor", lambda *args, **kwargs: InTurn())
    in_turn = two_days(tmp_path / "in_turn")
    # then the stores hold the same and the files (snapshots, answers) are byte for byte the same
    for name, frame in in_turn[0].items():
        pd.testing.assert_frame_equal(beside[0][name], frame, check_exact=True, obj=name)
    assert beside[1].keys() == in_turn[1].keys() and beside[1]
    assert beside[1] == in_turn[1]
