"""The batch day's work beside each other: the state read beside DuckDB's window, the feature
snapshot beside the plan; failures and outputs as in turn."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from serving.app import batch, batch_write
from serving.app.batch import BatchContext, BatchInputs, run_day
from serving.infra.store import StateStore
from tests.serving.fixtures import FIRST_DAY, NOW

WAIT_S = 20.0


class ReadFailed(Exception):
    """The state read's own failure."""


class SnapshotFailed(Exception):
    """The snapshot's own failure."""


def run(store, log, ruleset, data_dir=None, day=FIRST_DAY):
    """One rules-only day on the simulated log."""
    context = BatchContext(
        store=store, champion=None, ruleset=ruleset, run_id=f"run-{day}", now=NOW,
        data_dir=data_dir,
    )  # fmt: skip
    inputs = BatchInputs(events=log.events, customers=log.customers, validated=True)
    return run_day(day, inputs, context)


def waits_for(started: threading.Event, real):
    """``real``, called only once ``started`` is set (or failing after WAIT_S): run in turn,
    the job that sets it comes after, so the wait fails."""

    def waiting(*args, **kwargs):
        assert started.wait(WAIT_S), "ran before the work it should run beside"
        return real(*args, **kwargs)

    return waiting


def sets(started: threading.Event, real):
    def setting(*args, **kwargs):
        started.set()
        return real(*args, **kwargs)

    return setting


def store_contents(store: StateStore) -> dict[str, pd.DataFrame]:
    return {
        "state": store.state_frame(),
        "transitions": store.transitions_frame().drop(columns=["id", "created_at"]),
        "scores": store.scores_frame(),
        "runs": store.runs().drop(columns=["started_at", "finished_at"]),
    }


def test_the_state_is_read_while_duckdb_builds_the_window(
    sqlite_store, simulated_log, ruleset, monkeypatch
):
    # given a state read that can only finish once DuckDB's window has started
    started = threading.Event()
    monkeypatch.setattr(batch, "feature_day", sets(started, batch.feature_day))
    monkeypatch.setattr(StateStore, "state_frame", waits_for(started, StateStore.state_frame))
    # when the day runs
    result = run(sqlite_store, simulated_log, ruleset)
    # then it completes
    assert result.run.status == "completed"


def test_the_snapshot_is_written_while_the_plan_runs(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given a snapshot that can only finish once the plan has started
    planning = threading.Event()
    monkeypatch.setattr(
        batch_write, "plan_day_campaigns", sets(planning, batch_write.plan_day_campaigns)
    )
    monkeypatch.setattr(
        batch_write,
        "write_feature_snapshot",
        waits_for(planning, batch_write.write_feature_snapshot),
    )
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


def test_a_failed_state_read_fails_the_day_with_its_own_exception_even_when_duckdb_fails_too(
    sqlite_store, simulated_log, ruleset, monkeypatch
):
    # given a state read that fails, and a DuckDB window that fails too
    def read_fails(*args, **kwargs):
        raise ReadFailed("store gone")

    def window_fails(*args, **kwargs):
        raise RuntimeError("duckdb out of memory")

    monkeypatch.setattr(StateStore, "state_frame", read_fails)
    monkeypatch.setattr(batch, "feature_day", window_fails)
    # when the day runs, then the read's own exception surfaces
    with pytest.raises(ReadFailed, match="store gone"):
        run(sqlite_store, simulated_log, ruleset)
    # and nothing was written
    assert sqlite_store.runs().empty


def test_a_failed_answers_file_write_fails_the_day_with_its_own_exception(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given an answers write that fails with something other than an OSError
    def answers_fail(*args, **kwargs):
        raise ReadFailed("answers broke")

    monkeypatch.setattr(batch_write, "write_day_answers", answers_fail)
    # when the day runs, then its exception surfaces, after the commit
    with pytest.raises(ReadFailed, match="answers broke"):
        run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    assert (sqlite_store.runs()["status"] == "completed").all()


def files_of(data_dir: Path) -> dict[str, bytes]:
    """Every file a day wrote under ``data_dir`` but the scores (named by run id), by path."""
    paths = [path for path in sorted(data_dir.rglob("*")) if path.is_file()]
    return {str(path.relative_to(data_dir)): path.read_bytes() for path in paths}


def test_two_days_beside_write_what_they_write_in_turn(
    simulated_log, ruleset, tmp_path, monkeypatch
):
    # given two days run with their work beside each other, and the same two in turn
    def two_days(home: Path) -> tuple[dict[str, pd.DataFrame], dict[str, bytes]]:
        with StateStore(f"sqlite:///{home / 'state.db'}", scores_dir=home / "scores") as store:
            for day in (FIRST_DAY, FIRST_DAY + timedelta(1)):
                run(store, simulated_log, ruleset, home / "data", day)
            return store_contents(store), files_of(home / "data")

    beside = two_days(tmp_path / "beside")
    monkeypatch.setattr(batch, "_beside", lambda store: batch._InTurn())
    in_turn = two_days(tmp_path / "in_turn")
    # then the stores hold the same and the files are byte for byte the same
    for name, frame in in_turn[0].items():
        pd.testing.assert_frame_equal(beside[0][name], frame, check_exact=True, obj=name)
    assert beside[1].keys() == in_turn[1].keys()
    assert beside[1] == in_turn[1]
