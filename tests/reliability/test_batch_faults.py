"""Batch faults: a day killed (SIGKILL) at any stage boundary leaves the state it found, or the
completed day, and a rerun reaches the state an uninterrupted run makes, with no duplicate.

The kill comes from the batch's own progress hook (``serving.app.batch.BatchProgress``), not a
sleep: the child dies exactly when the named stage begins. On SQLite and on PostgreSQL, the scores
in files as the apps keep them.
"""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pandas as pd
import pytest

from serving.app.batch import STAGES
from serving.infra.store import StateStore
from tests.reliability.batch_child import run_rules_only_day
from tests.serving.fixtures import FIRST_DAY

DAY2 = FIRST_DAY + timedelta(days=1)
BEFORE_COMMIT = ("inputs", "learners", "features", "score", "decide", "snapshot", "plan", "write")
AFTER_COMMIT = ("answers", "summary")


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.reliability.batch_child"])
    return context


def contents(store: StateStore) -> dict[str, pd.DataFrame]:
    """What a day writes, without what differs between runs (ids, run ids, wall times)."""
    transitions = store.transitions_frame().drop(columns=["id", "run_id", "created_at"])
    return {
        "state": store.state_frame(),
        "transitions": transitions.sort_values(["customer_id", "as_of"], ignore_index=True),
        "scores": store.scores_frame().drop(columns="run_id"),
        "runs": store.runs()[["as_of", "status", "rules_only"]],
    }


def assert_same(actual: dict, expected: dict) -> None:
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(actual[name], frame, check_like=True, obj=name)


def run_child(processes, url, log, day, data_dir, kill_at):
    arguments = (url, str(log.events_path), str(log.customers_path), day, str(data_dir), kill_at)
    child = processes.Process(target=run_rules_only_day, args=arguments)
    child.start()
    child.join(timeout=180)
    return child.exitcode


@pytest.fixture(scope="module")
def reference(simulated_log, tmp_path_factory, processes) -> dict[str, pd.DataFrame]:
    """What days 1 and 2 run without a fault leave in a store."""
    home = tmp_path_factory.mktemp("reference")
    url = f"sqlite:///{home / 'state.db'}"
    for day in (FIRST_DAY, DAY2):
        assert run_child(processes, url, simulated_log, day, home / "data", None) == 0
    with StateStore(url, scores_dir=home / "data" / "scores") as store:
        return contents(store)


def test_every_stage_boundary_is_covered():
    assert set(BEFORE_COMMIT) | set(AFTER_COMMIT) == set(STAGES)


@pytest.mark.parametrize("stage", [*BEFORE_COMMIT, *AFTER_COMMIT])
def test_a_day_killed_at_a_stage_boundary_is_whole_or_absent_and_a_rerun_completes_it(
    stage, store_url, simulated_log, tmp_path, processes, reference
):
    # given day 1 completed
    url, data_dir = store_url, tmp_path / "data"
    assert run_child(processes, url, simulated_log, FIRST_DAY, data_dir, None) == 0
    with StateStore(url, scores_dir=data_dir / "scores") as store:
        after_day1 = contents(store)
    # when day 2 is killed as the stage begins
    assert run_child(processes, url, simulated_log, DAY2, data_dir, stage) == -9
    # then the store holds day 1 as it was (a stage before the commit), or day 2 whole
    with StateStore(url, scores_dir=data_dir / "scores") as store:
        found = contents(store)
    if stage in BEFORE_COMMIT:
        kept = {name: frame for name, frame in after_day1.items() if name != "runs"}
        assert_same(found, kept)
        assert (found["runs"]["status"] == "completed").sum() == 1
    else:
        assert_same(found, reference)
    # and a rerun of day 2 completes it, with the day's snapshot and no duplicate
    assert run_child(processes, url, simulated_log, DAY2, data_dir, None) == 0
    with StateStore(url, scores_dir=data_dir / "scores") as store:
        final = contents(store)
        transitions = store.transitions_frame()
    assert_same(final, reference)
    assert not transitions.duplicated(["customer_id", "as_of", "to_tag"]).any()
    assert (data_dir / "features" / f"as_of={DAY2}.parquet").exists()
    assert not list((data_dir / "features").glob(".*.partial"))


def test_three_runs_of_the_same_day_at_once_make_one_day(
    store_url, simulated_log, tmp_path, processes, reference
):
    # given day 1 completed
    data_dir = tmp_path / "data"
    assert run_child(processes, store_url, simulated_log, FIRST_DAY, data_dir, None) == 0
    # when three processes run day 2 at the same time
    arguments = (store_url, str(simulated_log.events_path), str(simulated_log.customers_path))
    children = [
        processes.Process(target=run_rules_only_day, args=(*arguments, DAY2, str(data_dir), None))
        for _ in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=180)
    # then all succeed, the day is made once, and no temporary file is left
    assert [child.exitcode for child in children] == [0, 0, 0]
    with StateStore(store_url, scores_dir=data_dir / "scores") as store:
        assert_same(contents(store), reference)
    assert not list((data_dir / "features").glob(".*.partial"))
    assert [path.name for path in (data_dir / "scores" / f"as_of={DAY2}").iterdir()] == [
        f"run-{DAY2}-None.parquet"
    ]
