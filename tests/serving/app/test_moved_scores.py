"""``moved_scores``: each day's moved learners' scores, read from the store once and kept."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from serving.app.kpis import SCORE_COLUMNS
from serving.app.moved_scores import moved_scores
from serving.infra.store_reads import day_learners
from tests.serving.batches import FIRST_DAY, apply

START = date(2024, 3, 1)
COLUMNS = list(SCORE_COLUMNS)


def _four_days(store) -> list[date]:
    """a, b, c tagged on day 1; a moves on day 2, b on day 3, nobody on day 4 (a stay is no
    transition)."""
    days = [START + timedelta(days=offset) for offset in range(4)]
    apply(store, days[0], FIRST_DAY)
    apply(store, days[1], [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_001")])
    apply(store, days[2], [("b", "ST_001", "ST_004"), ("c", "ST_001", "ST_001")])
    apply(store, days[3], [("c", "ST_001", "ST_001")])
    return days


def _completed(store) -> list[tuple[date, str]]:
    runs = store.runs()
    runs = runs[runs["status"] == "completed"]
    return list(zip(runs["as_of"].dt.date, runs["run_id"], strict=True))


def _store_reads(store, monkeypatch) -> list[date | None]:
    """The days ``scores_frame`` is asked for from now on."""
    asked: list[date | None] = []
    original = store.scores_frame

    def counting(as_of=None, **options):
        asked.append(as_of)
        return original(as_of, **options)

    monkeypatch.setattr(store, "scores_frame", counting)
    return asked


def _expected(store, transitions) -> pd.DataFrame:
    return store.scores_frame(columns=COLUMNS, learners=day_learners(transitions))


def test_the_kept_rows_are_the_stores_and_are_read_once(scores_store, tmp_path, monkeypatch):
    # given four days; the moved learners' scores read once
    days = _four_days(scores_store)
    transitions = scores_store.transitions_frame()
    first = moved_scores(scores_store, tmp_path, transitions, _completed(scores_store), COLUMNS)
    expected = _expected(scores_store, transitions)
    asked = _store_reads(scores_store, monkeypatch)
    # when they are asked again
    again = moved_scores(scores_store, tmp_path, transitions, _completed(scores_store), COLUMNS)
    # then both are the store's own frame of them, and the second read no day from the store
    pd.testing.assert_frame_equal(first, expected)
    pd.testing.assert_frame_equal(again, first)
    assert asked == []
    moved = sorted(first["customer_id"] + first["as_of"].dt.strftime("%d"))
    assert moved == ["a01", "a02", "b01", "b03", "c01"]
    assert len(days) == 4


def test_a_replaced_day_and_a_days_new_transition_are_read_again(
    scores_store, tmp_path, monkeypatch
):
    # given the kept rows of four days, then the last day replaced
    days = _four_days(scores_store)
    moved_scores(
        scores_store, tmp_path, scores_store.transitions_frame(), _completed(scores_store), COLUMNS
    )
    apply(scores_store, days[3], [("a", "ST_002", "ST_004")], run_id="again", replace=True)
    transitions = scores_store.transitions_frame()
    expected = _expected(scores_store, transitions)
    asked = _store_reads(scores_store, monkeypatch)
    found = moved_scores(scores_store, tmp_path, transitions, _completed(scores_store), COLUMNS)
    # then only that day is read again, and the rows are the store's
    assert asked == [days[3]]
    pd.testing.assert_frame_equal(found, expected)
    # and a transition added to day 3 in the audit log (c's, a new id) reads day 3 again
    extra = transitions[transitions["customer_id"] == "c"].head(1)
    extra = extra.assign(id=transitions["id"].max() + 1, as_of=pd.Timestamp(days[2]))
    asked.clear()
    grown = pd.concat([transitions, extra], ignore_index=True)
    found = moved_scores(scores_store, tmp_path, grown, _completed(scores_store), COLUMNS)
    assert asked == [days[2]]
    assert "c" in set(found.loc[found["as_of"] == pd.Timestamp(days[2]), "customer_id"])


def test_a_workspace_that_cannot_be_written_still_reads(scores_store, tmp_path):
    _four_days(scores_store)
    (tmp_path / "kpis").write_text("not a directory")
    transitions = scores_store.transitions_frame()
    found = moved_scores(scores_store, tmp_path, transitions, _completed(scores_store), COLUMNS)
    pd.testing.assert_frame_equal(found, _expected(scores_store, transitions))
