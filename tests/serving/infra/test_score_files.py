"""A day's scores as parquet files beside the SQL store: layout, atomicity, migration, errors."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

import serving.infra.store as store_module
from serving.core.frames import STORED_SCORES_SCHEMA
from serving.core.problems import Unavailable
from serving.infra.score_files import SCORES_ARROW_SCHEMA, score_file, scores_table
from serving.infra.store import StateStore
from serving.infra.workspace import open_workspace_store
from serving.settings import Settings
from tests.serving.batches import FIRST_DAY, apply, at, decisions
from tests.serving.conftest import FINISHED_AT

DAY1 = date(2024, 3, 1)
DAY2 = date(2024, 3, 2)
DAY3 = date(2024, 3, 3)
MOVES = [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_001")]
MODEL = pd.DataFrame(
    {
        "customer_id": ["b", "a"],
        "p_churn": [0.9, 0.1],
        "p_low": [0.8, 0.05],
        "p_high": [0.95, 0.2],
        "confidence": [0.6, 0.7],
    }
)


@pytest.fixture
def scores_dir(tmp_path) -> Path:
    return tmp_path / "scores"


@pytest.fixture
def parquet_store(store_url: str, scores_dir: Path):
    """A store on SQLite or PostgreSQL keeping its scores under ``scores_dir``."""
    opened = StateStore(store_url, scores_dir=scores_dir, clock=lambda: FINISHED_AT)
    yield opened
    opened.close()


def scored_day(store: StateStore, day: date, moves, run_id: str, **options):
    """A day with the model's scores of a and b (``MODEL``), the others rules only."""
    return store.apply_batch(
        day, decisions(day, moves), MODEL, run_id=run_id, model_version="v3",
        rules_only=False, now=at(day), **options,
    )  # fmt: skip


def test_the_file_columns_are_the_stored_scores_frame_columns():
    assert SCORES_ARROW_SCHEMA.names == list(STORED_SCORES_SCHEMA.columns)


def test_the_lifetime_projection_is_stored_and_files_from_before_it_read_as_null(
    parquet_store, scores_dir
):
    # Given a day stored with the projection, and a file of the same day written before it
    scored_day(parquet_store, DAY1, [("a", None, "ST_001"), ("b", None, "ST_001")], "r1")
    path = score_file(scores_dir, DAY1, "r1")
    table = pq.read_table(path)
    # Then the day's row carries the decision's projection
    stored = parquet_store.scores_frame(DAY1).iloc[0]
    assert (stored["expected_months"], stored["projected_value"]) == (2.5, 75.0)
    # When the file loses the two columns, as a file from before the projection has them
    pq.write_table(table.drop_columns(["expected_months", "projected_value"]), path)
    # Then it still reads, with null projections
    before = parquet_store.scores_frame(DAY1).iloc[0]
    assert pd.isna(before["expected_months"]) and pd.isna(before["projected_value"])
    assert before["value_at_risk"] == 12.0


def test_a_day_is_one_file_per_run_sorted_by_learner_and_sql_holds_no_score(
    parquet_store, scores_dir
):
    # Given a day applied with a scores directory
    scored_day(
        parquet_store,
        DAY1,
        [("c", None, "ST_001"), ("b", None, "ST_001"), ("a", None, "ST_001")],
        "r1",
    )
    # Then its scores are one file named after the run, in the day's partition, by customer_id
    files = sorted(path.relative_to(scores_dir) for path in scores_dir.rglob("*.parquet"))
    assert files == [Path("as_of=2024-03-01/r1.parquet")]
    table = pq.read_table(scores_dir / files[0])
    assert table.schema.names == SCORES_ARROW_SCHEMA.names
    assert table.column("customer_id").to_pylist() == ["a", "b", "c"]
    # And the SQL scores table stays empty
    engine = create_engine(parquet_store.url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM scores")).scalar_one() == 0
    engine.dispose()


@pytest.mark.parametrize(
    "ids",
    [["C03", "C10", "C01", "C02"], ["b", "a10", "", "a9", "é"]],
    ids=["one width", "several widths"],
)
def test_a_scores_table_is_its_rows_in_the_order_of_their_ids(ids):
    # Given score rows in decision order, ids of one width (byte keys) or of several (Arrow)
    rows = pd.DataFrame({name: [None] * len(ids) for name in SCORES_ARROW_SCHEMA.names})
    rows = rows.assign(customer_id=ids, p_churn=[float(n) / 10 for n in range(len(ids))])
    # When the file's table is made
    table = scores_table(rows)
    # Then its rows are the ones given, by id as Arrow sorts text, each with its own values
    expected = pa.Table.from_pandas(rows, schema=SCORES_ARROW_SCHEMA, preserve_index=False)
    assert table.equals(expected.sort_by("customer_id"))
    assert table.column("customer_id").to_pylist() == sorted(ids, key=str.encode)


def test_parquet_and_sql_stores_give_the_same_frames_and_latest_rows(tmp_path):
    # Given the same three days into a store keeping scores in SQL and one keeping files
    stores = [
        StateStore(f"sqlite:///{tmp_path / 'sql.db'}"),
        StateStore(f"sqlite:///{tmp_path / 'files.db'}", scores_dir=tmp_path / "scores"),
    ]
    for store in stores:
        scored_day(store, DAY1, [*FIRST_DAY, ("dz", None, "ST_001")], "r1")
        scored_day(store, DAY2, MOVES, "r2")
        apply(store, DAY3, [("c", "ST_001", "ST_003")], run_id="r3")
    sql, files = stores
    # Then every read is equal: all days, one day, some columns, and each learner's latest row
    pd.testing.assert_frame_equal(files.scores_frame(), sql.scores_frame())
    pd.testing.assert_frame_equal(files.scores_frame(DAY2), sql.scores_frame(DAY2))
    columns = ["p_high", "customer_id", "control"]
    pd.testing.assert_frame_equal(
        files.scores_frame(columns=columns), sql.scores_frame(columns=columns)
    )
    for customer_id in ("a", "c", "dz", "nobody"):
        assert files.latest_score(customer_id) == sql.latest_score(customer_id), customer_id
    assert files.latest_score("a")["as_of"] == DAY2 and files.latest_score("dz")["as_of"] == DAY1
    for store in stores:
        store.close()


def test_a_replace_keeps_the_new_runs_file_only(parquet_store, scores_dir):
    # Given day 2 completed by run "old"
    apply(parquet_store, DAY1, FIRST_DAY)
    apply(parquet_store, DAY2, MOVES, run_id="old")
    # When it is replaced by run "new"
    apply(parquet_store, DAY2, [("a", "ST_001", "ST_001")], run_id="new", replace=True)
    # Then the day reads the new run's rows and the old run's file is gone
    assert parquet_store.scores_frame(DAY2)["customer_id"].tolist() == ["a"]
    assert not score_file(scores_dir, DAY2, "old").exists()
    assert score_file(scores_dir, DAY2, "new").exists()


def test_a_replace_that_fails_leaves_the_day_and_its_file(parquet_store, scores_dir, monkeypatch):
    # Given day 2 completed by run "old", and a transitions insert that breaks
    apply(parquet_store, DAY1, FIRST_DAY)
    apply(parquet_store, DAY2, MOVES, run_id="old")
    before = parquet_store.scores_frame()
    real_insert = store_module.bulk_insert

    def failing_insert(conn, table, frame):
        if table.name == "transitions":
            raise RuntimeError("disk full")
        real_insert(conn, table, frame)

    monkeypatch.setattr(store_module, "bulk_insert", failing_insert)
    # When the replace fails
    with pytest.raises(RuntimeError, match="disk full"):
        apply(parquet_store, DAY2, [("c", "ST_001", "ST_004")], run_id="new", replace=True)
    # Then the day's scores are the old run's, and the failed run left no file
    pd.testing.assert_frame_equal(parquet_store.scores_frame(), before)
    assert score_file(scores_dir, DAY2, "old").exists()
    assert not score_file(scores_dir, DAY2, "new").exists()


def test_a_failed_attempt_under_the_completed_runs_id_keeps_the_days_file(
    parquet_store, scores_dir, monkeypatch
):
    # Given day 1 completed by run r1, and a second process of r1 that claimed the day before
    # the first committed (three at once do that) and then fails inside its transaction
    apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    monkeypatch.setattr(parquet_store, "_claim_run", lambda batch: None)

    def failing_write(*args):
        raise RuntimeError("connection lost")

    monkeypatch.setattr(parquet_store, "_write_batch", failing_write)
    # When it fails, Then the completed day's file is still there and read
    with pytest.raises(RuntimeError, match="connection lost"):
        apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    assert score_file(scores_dir, DAY1, "r1").exists()
    assert len(parquet_store.scores_frame(DAY1)) == 3


def test_a_file_of_a_run_that_never_completed_is_not_read(parquet_store, scores_dir):
    # Given day 1 completed by run r1, and beside its file one of a run that never committed
    apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    completed = pq.read_table(score_file(scores_dir, DAY1, "r1"))
    pq.write_table(completed.slice(0, 1), score_file(scores_dir, DAY1, "crashed"))
    # When the day is read, Then only the completed run's rows come back
    frame = parquet_store.scores_frame(DAY1)
    assert frame["run_id"].eq("r1").all() and len(frame) == 3


def test_a_missing_file_of_a_completed_day_is_one_line_naming_it(parquet_store, scores_dir):
    # Given a completed day whose file was deleted
    apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    score_file(scores_dir, DAY1, "r1").unlink()
    # When the scores are read, Then one Unavailable line names the file
    with pytest.raises(Unavailable) as raised:
        parquet_store.scores_frame()
    message = raised.value.message
    assert "scores of 2024-03-01 (run r1)" in message and "r1.parquet is missing" in message
    assert "\n" not in message
    with pytest.raises(Unavailable, match="is missing"):
        parquet_store.latest_score("a")


def test_a_corrupt_file_of_a_completed_day_is_one_line_naming_the_directory(
    parquet_store, scores_dir
):
    # Given a completed day whose file was overwritten with garbage
    apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    score_file(scores_dir, DAY1, "r1").write_bytes(b"not parquet")
    # When the scores or a learner's latest row are read, Then one Unavailable line says so
    for read in (parquet_store.scores_frame, lambda: parquet_store.latest_score("a")):
        with pytest.raises(Unavailable) as raised:
            read()
        assert raised.value.message.startswith(f"scores directory {scores_dir}: ")
        assert "\n" not in raised.value.message


def test_a_store_opened_without_the_directory_its_days_went_to_says_so(parquet_store):
    # Given a day whose scores went to a file
    apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    # When the store is opened without its scores directory and scores are read
    with StateStore(parquet_store.url, auto_migrate=False) as without:
        # Then one Unavailable line says where they are, never an empty day
        for read in (without.scores_frame, lambda: without.latest_score("a")):
            with pytest.raises(
                Unavailable, match=r"scores of 2024-03-01 \(run r1\) are not in SQL"
            ):
                read()


def test_a_scores_directory_that_cannot_be_written_leaves_the_state_unchanged(tmp_path):
    # Given a store whose scores directory lies under a plain file (no one can create it)
    (tmp_path / "a-file").write_text("not a directory")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url, scores_dir=tmp_path / "a-file" / "scores")
    # When a day is applied, Then one Unavailable line names the directory
    with pytest.raises(Unavailable, match=r"scores directory .*a-file/scores: Not a directory"):
        apply(store, DAY1, FIRST_DAY)
    # And no learner, transition or score was written; the run records why it failed
    assert store.state_frame().empty and store.transitions_frame().empty
    runs = store.runs()
    assert runs["status"].tolist() == ["failed"]
    assert "Not a directory" in runs["summary"].iloc[0]["error"]
    store.close()


def test_a_failing_transaction_waits_for_the_days_file_and_removes_it(
    parquet_store, scores_dir, monkeypatch
):
    # Given a scores file still being written when the day's SQL transaction fails
    # (the file is written while the transaction runs)
    real_write = store_module.write_scores
    written = []

    def slow_write(*args):
        time.sleep(0.3)
        written.append(real_write(*args))

    def failing_batch(*args):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(store_module, "write_scores", slow_write)
    monkeypatch.setattr(StateStore, "_write_batch", failing_batch)
    # When the day is applied, Then the transaction's error comes out
    with pytest.raises(RuntimeError, match="the disk is full"):
        apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    # And the file was finished before it was removed: no file, partial or not, is left
    assert len(written) == 1 and not written[0].exists()
    assert [path.name for path in scores_dir.rglob("*") if path.is_file()] == []
    assert parquet_store.runs()["status"].tolist() == ["failed"]


def test_days_stored_in_sql_before_are_still_read_and_replaced(tmp_path):
    # Given two days stored in SQL by a store without a scores directory
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore(url) as before:
        scored_day(before, DAY1, FIRST_DAY, "r1")
        apply(before, DAY2, MOVES, run_id="r2")
        legacy = before.scores_frame()
    # When the store is opened with a scores directory and day 3 goes to a file
    store = StateStore(url, scores_dir=tmp_path / "scores")
    apply(store, DAY3, [("a", "ST_002", "ST_003")], run_id="r3")
    # Then the SQL days and the file's day read as one frame, in day order
    frame = store.scores_frame()
    assert frame["run_id"].tolist() == ["r1"] * 3 + ["r2"] * 2 + ["r3"]
    pd.testing.assert_frame_equal(frame[frame["run_id"] != "r3"].reset_index(drop=True), legacy)
    narrow = store.scores_frame(columns=["control", "run_id"])
    assert narrow["run_id"].tolist() == frame["run_id"].tolist()
    assert store.latest_score("a")["run_id"] == "r3" and store.latest_score("c")["run_id"] == "r1"
    # And once day 3 is replaced without a, a's latest row is day 2's, in SQL
    apply(store, DAY3, [("b", "ST_001", "ST_004")], run_id="r3b", replace=True)
    assert store.latest_score("a")["run_id"] == "r2"
    store.close()


def test_a_replace_under_the_completed_runs_own_id_is_refused(parquet_store, scores_dir):
    # Given day 1 completed by run r1
    apply(parquet_store, DAY1, FIRST_DAY, run_id="r1")
    # When it is replaced under the same run id, Then it is refused and the file is intact
    with pytest.raises(ValueError, match="replace needs a new run_id: 'r1'"):
        apply(parquet_store, DAY1, FIRST_DAY[:1], run_id="r1", replace=True)
    assert len(parquet_store.scores_frame(DAY1)) == 3


def test_a_run_id_never_leaves_its_days_directory(parquet_store, scores_dir):
    # Given a run id with path separators
    apply(parquet_store, DAY1, FIRST_DAY, run_id="../../etc/x")
    # Then its file lies in the day's partition, and reads back
    (path,) = scores_dir.rglob("*.parquet")
    assert path.parent == scores_dir / "as_of=2024-03-01"
    assert parquet_store.scores_frame()["run_id"].eq("../../etc/x").all()


def test_the_workspace_store_keeps_scores_under_the_data_directory(tmp_path):
    # Given a workspace's settings
    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data")
    # When the apps open its store, Then its scores go under <data_dir>/scores
    store = open_workspace_store(settings, at(DAY1))
    assert store.scores_dir == tmp_path / "data" / "scores"
    with StateStore.from_settings(settings) as same:
        assert same.scores_dir == store.scores_dir
    store.close()


def test_each_learner_is_stored_with_their_own_model_interval_whatever_the_order(scores_store):
    # Given decisions c, b, a (c rules only) and the model's scores of b and a in another order
    day = [("c", None, "ST_001"), ("b", None, "ST_001"), ("a", None, "ST_001")]
    scores_store.apply_batch(
        DAY1, decisions(DAY1, day), MODEL.iloc[::-1], run_id="r1", model_version="v3",
        rules_only=False, now=at(DAY1),
    )  # fmt: skip
    # When the day's scores are read back, from SQL or from the run's file
    stored = scores_store.scores_frame(DAY1)
    # Then one row per learner, by learner, each with their own interval (none for c)
    assert stored["customer_id"].tolist() == ["a", "b", "c"]
    assert stored["p_low"].tolist()[:2] == [0.05, 0.8] and stored["p_high"].tolist()[:2] == [
        0.2,
        0.95,
    ]
    assert stored["p_low"].isna().tolist() == [False, False, True]
    assert stored["priority"].tolist() == ["P2"] * 3 and stored["action"].tolist() == ["call"] * 3
