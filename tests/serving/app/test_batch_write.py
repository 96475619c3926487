"""The batch day's write: the feature snapshot written beside the campaign plan, its failure
failing the day before the commit, and the files and the store those of the two in turn."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from serving.app import batch, batch_write
from serving.app.batch import BatchContext, BatchInputs, Models, run_day
from serving.infra.store import StateStore
from tests.serving.batches import set_override
from tests.serving.fixtures import FIRST_DAY, NOW

WAIT_S = 20.0
DAY = timedelta(days=1)


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
        store=store, models=Models(None, ruleset), run_id=f"run-{day}", now=NOW,
        data_dir=data_dir,
    )  # fmt: skip
    inputs = BatchInputs(events=log.events, customers=log.customers, validated=True)
    return run_day(day, inputs, context)


def in_order(monkeypatch, first: tuple, then: tuple, failure: str) -> threading.Event:
    """Patch ``first`` (owner, name) to set an event once called, and ``then`` to wait for it
    (``failure`` after ``WAIT_S``): ``then`` can only go on once ``first`` has begun. Returns
    the event (cleared, the order is asked of the next calls again)."""
    begun = threading.Event()
    first_call, then_call = getattr(*first), getattr(*then)

    def started(*args, **kwargs):
        begun.set()
        return first_call(*args, **kwargs)

    def waited(*args, **kwargs):
        assert begun.wait(WAIT_S), failure
        return then_call(*args, **kwargs)

    monkeypatch.setattr(*first, started)
    monkeypatch.setattr(*then, waited)
    return begun


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
    first = (batch_write, "plan_day_campaigns")
    then = (batch_write, "write_feature_snapshot")
    in_order(monkeypatch, first, then, "the snapshot was written before the plan began")
    # when the day runs with a data directory
    result = run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    # then it completes with its snapshot
    assert result.run.status == "completed" and result.feature_snapshot.exists()


def test_the_plans_pending_pairs_are_read_once_while_the_day_is_decided(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given a decide stage that can only go on once the pending pairs are being read (read in
    # the plan, after it, the wait fails), and the reads counted
    reading, reads = threading.Event(), []
    pending_pairs, cut_day = sqlite_store.pending_pairs, batch.cut_day

    def read(as_of):
        reads.append(as_of)
        reading.set()
        return pending_pairs(as_of)

    def decided(*args, **kwargs):
        assert reading.wait(WAIT_S), "the pending pairs were read after the day was decided"
        return cut_day(*args, **kwargs)

    monkeypatch.setattr(sqlite_store, "pending_pairs", read)
    monkeypatch.setattr(batch, "cut_day", decided)
    # when two days run (the second one with pending messages of the first)
    run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    result = run(sqlite_store, simulated_log, ruleset, tmp_path / "data", FIRST_DAY + DAY)
    # then each read them once, and the second planned on them as a read in the plan would
    assert reads == [FIRST_DAY, FIRST_DAY + DAY] and result.run.status == "completed"


def test_the_state_before_the_day_is_read_while_the_window_is_built(
    sqlite_store, simulated_log, ruleset, monkeypatch
):
    # given a state read that can only go on once DuckDB's window is being built (read before
    # it, the wait fails)
    first, then = (batch, "feature_day"), (sqlite_store, "state_frame")
    building = in_order(monkeypatch, first, then, "the state was read before the window was built")
    # when two days run (the second on the state the first left)
    first = run(sqlite_store, simulated_log, ruleset)
    building.clear()
    second = run(sqlite_store, simulated_log, ruleset, day=FIRST_DAY + DAY)
    # then both completed, the second decided on the tags the first left
    assert second.run.status == "completed" and second.tags_before == first.tags_after


def test_the_plans_pending_pairs_are_not_read_before_the_day_is_decided(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given the reads counted, and what had been read when the day's scoring began
    reads, read_before_scoring = [], []
    pending_pairs, assess = sqlite_store.pending_pairs, batch.assess

    def scored(*args, **kwargs):
        read_before_scoring.append(list(reads))
        return assess(*args, **kwargs)

    monkeypatch.setattr(sqlite_store, "pending_pairs", lambda as_of: reads.append(as_of) or
                        pending_pairs(as_of))  # fmt: skip
    monkeypatch.setattr(batch, "assess", scored)
    # when a day runs
    result = run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    # then nothing was read while the window was built (DuckDB's two threads take both cores
    # there), and the day's read came after
    assert read_before_scoring == [[]] and reads == [FIRST_DAY]
    assert result.run.status == "completed"


def test_a_dry_run_or_a_day_without_campaigns_reads_no_pending_pairs(
    sqlite_store, simulated_log, ruleset, monkeypatch
):
    # given the pending pairs' reads counted
    reads = []
    monkeypatch.setattr(sqlite_store, "pending_pairs", lambda as_of: reads.append(as_of))
    inputs = BatchInputs(events=simulated_log.events, customers=simulated_log.customers,
                         validated=True)  # fmt: skip
    # when a day runs dry, and one runs with campaigns off
    for dry_run, campaigns in [(True, True), (False, False)]:
        context = BatchContext(
            store=sqlite_store, models=Models(None, ruleset), run_id=f"run-{dry_run}",
            now=NOW, campaigns=campaigns,
        )  # fmt: skip
        run_day(FIRST_DAY, inputs, context, dry_run=dry_run)
    # then neither read them
    assert reads == []


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


# ---- the answers decided while the store commits the day -----------------------------------


def counted_answers(monkeypatch) -> list[pd.DataFrame]:
    """Records the state each ``answers_table`` call of the write decides on."""
    states, build = [], batch_write.answers_table

    def counted(*args, **kwargs):
        states.append(kwargs["state"])
        return build(*args, **kwargs)

    monkeypatch.setattr(batch_write, "answers_table", counted)
    return states


def answers_file(data_dir: Path):
    import pyarrow as pa

    (path,) = (data_dir / "answers").glob("as_of=*.arrow")
    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def test_the_answers_are_decided_while_the_store_commits_the_day(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given a commit that can only go on once the answers are being decided (in turn, they
    # would come after it: the wait fails)
    deciding = threading.Event()
    build, apply_day = batch_write.answers_table, sqlite_store.apply_day

    def decided(*args, **kwargs):
        deciding.set()
        return build(*args, **kwargs)

    def committed(*args, **kwargs):
        assert deciding.wait(WAIT_S), "the answers were decided after the commit"
        return apply_day(*args, **kwargs)

    monkeypatch.setattr(batch_write, "answers_table", decided)
    monkeypatch.setattr(sqlite_store, "apply_day", committed)
    # when the day runs with a data directory, then it completes with its answers file
    result = run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    assert result.run.status == "completed" and answers_file(tmp_path / "data").num_rows


def test_the_answers_decided_on_the_predicted_state_are_kept_when_the_store_holds_it(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given day 1 done, and each answers decide of day 2 recorded
    run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    states = counted_answers(monkeypatch)
    # when day 2 runs, moving some learners
    day2 = FIRST_DAY + timedelta(1)
    result = run(sqlite_store, simulated_log, ruleset, tmp_path / "data", day2)
    assert result.run.summary["transitions"] > 0
    # then the answers were decided once, on the state the store holds after the day
    assert len(states) == 1
    pd.testing.assert_frame_equal(states[0], sqlite_store.state_frame(day2))


def test_the_answers_are_decided_again_when_a_state_changed_during_the_day(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given day 1 done, and a day 2 during whose plan a CS lead holds a tagged learner the day
    # leaves where they are (a state the day's moves cannot predict)
    run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    plan, held = batch_write.plan_day_campaigns, []

    def planned(assessment, store, campaigns, **kwargs):
        decisions = assessment.decisions
        held.append(decisions.loc[decisions["from_tag"].notna() & ~decisions["changed"]].iloc[0])
        set_override(store, held[0]["customer_id"], None, actor="kim", reason="call", now=NOW)
        return plan(assessment, store, campaigns, **kwargs)

    monkeypatch.setattr(batch_write, "plan_day_campaigns", planned)
    states = counted_answers(monkeypatch)
    # when day 2 runs
    day2 = FIRST_DAY + timedelta(1)
    run(sqlite_store, simulated_log, ruleset, tmp_path / "data", day2)
    # then the answers were decided again, on the store's state, which holds the hold
    stored = sqlite_store.state_frame(day2)
    customer_id = held[0]["customer_id"]
    assert stored.set_index("customer_id").loc[customer_id, "override_kind"] == "hold"
    assert len(states) == 2
    pd.testing.assert_frame_equal(states[-1], stored)
    # and the file holds the learner's hold
    table = answers_file(tmp_path / "data")
    at = table.column("lstep.key").to_pylist().index(customer_id.encode())
    assert table.column("lstep.state.override_tag")[at].as_py() == held[0]["from_tag"]


@pytest.mark.parametrize("failing", ["plan", "commit"])
def test_a_failed_plan_or_commit_leaves_no_answers_file(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch, failing
):
    # given a plan or a commit that fails once the day's answers are written beside it
    build = batch_write.answers_table
    written = threading.Event()

    def decided(*args, **kwargs):
        table = build(*args, **kwargs)
        written.set()
        return table

    def fails(*args, **kwargs):
        assert written.wait(WAIT_S), "the answers were not decided beside the plan and commit"
        raise OSError("database is locked")

    monkeypatch.setattr(batch_write, "answers_table", decided)
    if failing == "plan":
        monkeypatch.setattr(batch_write, "plan_day_campaigns", fails)
    else:
        monkeypatch.setattr(sqlite_store, "apply_day", fails)
    # when the day runs, then the failure is raised
    with pytest.raises(OSError, match="database is locked"):
        run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    # and no answers file is left, published or not
    answers_dir = tmp_path / "data" / "answers"
    assert not answers_dir.exists() or not list(answers_dir.iterdir())


def test_answers_that_failed_ahead_of_the_commit_are_decided_on_the_stored_state(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch, caplog
):
    # given a day whose prediction of the state after it fails
    def fails(*args, **kwargs):
        raise RuntimeError("unexpected decisions")

    monkeypatch.setattr(batch_write, "state_after_moves", fails)
    states = counted_answers(monkeypatch)
    # when the day runs
    result = run(sqlite_store, simulated_log, ruleset, tmp_path / "data")
    # then it completes, its answers decided once, on the state the store holds, and warned
    assert result.run.status == "completed"
    assert len(states) == 1
    pd.testing.assert_frame_equal(states[0], sqlite_store.state_frame(FIRST_DAY))
    assert answers_file(tmp_path / "data").num_rows == len(result.assessment.features)
    assert "unexpected decisions" in caplog.text


def test_a_day_on_an_in_memory_store_reads_its_pending_pairs_on_its_own_thread(
    simulated_log, ruleset
):
    # given an in-memory store (each thread's connection is a database of its own)
    with StateStore("sqlite://") as store:
        # when two days run, the second with pairs still pending from the first
        run(store, simulated_log, ruleset)
        pending = store.pending_pairs(FIRST_DAY + DAY)
        result = run(store, simulated_log, ruleset, day=FIRST_DAY + DAY)
        # then the day completes, planned against the pairs its store holds
        assert len(pending) > 0
        assert result.run.status == "completed"
        assert result.run.summary["messages"]["planned"] > 0
