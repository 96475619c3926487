"""Batch faults: a day killed (SIGKILL) at any stage boundary leaves the state it found, or the
completed day, and a rerun reaches the state an uninterrupted run makes, with no duplicate.

The kill comes from the batch's own progress hook (``serving.app.batch.BatchProgress``), not a
sleep: the child dies exactly when the named stage begins. The scores are in files as the apps keep
them.

SQLite is killed at every stage boundary. PostgreSQL is killed where the store is in play
(``POSTGRES_STAGES``): the stages between ``inputs`` and ``write`` read the store and commit
nothing (the day is one transaction, in ``write``), so a kill there leaves either store as the
kill at ``inputs`` does, and what they leave in files is the same on both. Day 1 is run once per
module into a SQLite template that each SQLite case copies: the suite's slowest file (~5 min of
CI's test time) ran a day more per case than it tests.
"""

from __future__ import annotations

import multiprocessing
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from serving.app.batch import STAGES
from serving.infra.store import StateStore
from tests.reliability.batch_child import run_rules_only_day
from tests.serving.fixtures import FIRST_DAY

DAY2 = FIRST_DAY + timedelta(days=1)
BEFORE_COMMIT = ("inputs", "learners", "features", "score", "decide", "snapshot", "plan", "write")
AFTER_COMMIT = ("answers", "summary")
POSTGRES_STAGES = ("inputs", "write", "answers")
"""Before anything, the commit, and the first stage after it."""
KILLS = [
    *(
        pytest.param("sqlite", stage, id=f"sqlite-{stage}")
        for stage in BEFORE_COMMIT + AFTER_COMMIT
    ),
    *(
        pytest.param("postgresql", stage, id=f"postgresql-{stage}", marks=pytest.mark.postgres)
        for stage in POSTGRES_STAGES
    ),
]


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


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'state.db'}"


@pytest.fixture(scope="module")
def day_one(simulated_log, tmp_path_factory, processes) -> Path:
    """A home (``state.db`` and the data directory) where day 1 ran without a fault."""
    home = tmp_path_factory.mktemp("day-one")
    assert (
        run_child(processes, sqlite_url(home), simulated_log, FIRST_DAY, home / "data", None) == 0
    )
    assert not list(home.glob("state.db-*")), "the child left its WAL: the copies would lose it"
    return home


def after_day_one(url, simulated_log, tmp_path, processes, day_one) -> tuple[str, Path]:
    """A store and data directory holding day 1: the template copied (SQLite), or run."""
    if url.startswith("sqlite"):
        home = Path(shutil.copytree(day_one, tmp_path / "home"))
        return sqlite_url(home), home / "data"
    assert run_child(processes, url, simulated_log, FIRST_DAY, tmp_path / "data", None) == 0
    return url, tmp_path / "data"


@pytest.fixture(scope="module")
def reference(simulated_log, tmp_path_factory, processes, day_one) -> dict[str, pd.DataFrame]:
    """What days 1 and 2 run without a fault leave in a store."""
    home = Path(shutil.copytree(day_one, tmp_path_factory.mktemp("reference") / "home"))
    assert run_child(processes, sqlite_url(home), simulated_log, DAY2, home / "data", None) == 0
    with StateStore(sqlite_url(home), scores_dir=home / "data" / "scores") as store:
        return contents(store)


def test_every_stage_boundary_is_covered():
    assert set(BEFORE_COMMIT) | set(AFTER_COMMIT) == set(STAGES)


def test_postgresql_is_killed_where_the_store_is_in_play():
    assert set(POSTGRES_STAGES) <= set(STAGES)
    assert "write" in POSTGRES_STAGES and POSTGRES_STAGES[0] == next(iter(STAGES))


@pytest.mark.parametrize(("store_url", "stage"), KILLS, indirect=["store_url"])
def test_a_day_killed_at_a_stage_boundary_is_whole_or_absent_and_a_rerun_completes_it(
    stage, store_url, simulated_log, tmp_path, processes, reference, day_one
):
    # given day 1 completed
    url, data_dir = after_day_one(store_url, simulated_log, tmp_path, processes, day_one)
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
    store_url, simulated_log, tmp_path, processes, reference, day_one
):
    # given day 1 completed
    url, data_dir = after_day_one(store_url, simulated_log, tmp_path, processes, day_one)
    # when three processes run day 2 at the same time
    arguments = (url, str(simulated_log.events_path), str(simulated_log.customers_path))
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
    with StateStore(url, scores_dir=data_dir / "scores") as store:
        assert_same(contents(store), reference)
    assert not list((data_dir / "features").glob(".*.partial"))
    assert [path.name for path in (data_dir / "scores" / f"as_of={DAY2}").iterdir()] == [
        f"run-{DAY2}-None.parquet"
    ]
