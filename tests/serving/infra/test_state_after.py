"""The state after a batch day from the state before it (``StateStore.state_after``), and the
changed learners' tags the commit checks (``state_sql.read_tags_of``), on SQLite and PostgreSQL.

Each test holds the shortcut to what a whole read gives (``state_frame``, ``read_tags``): the
same frame, dtypes and order, whatever happened between the two reads.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest

from serving.core.state import moves_match, state_after_moves
from serving.infra.state_sql import read_tags, read_tags_of
from serving.infra.store import StateStore
from tests.serving.batches import FIRST_DAY, apply, decisions, set_override

DAY1, DAY2, DAY3 = (date(2024, 3, day) for day in range(1, 4))
WALL = datetime(2024, 12, 2, 15, tzinfo=UTC)


def matched(store: StateStore, day: date, before, mark, moves) -> bool:
    """``moves_match`` of the day's decisions on the store's changes since ``mark``."""
    changes = store.state_changes(day, before, mark)
    assert changes is not None
    return moves_match(before, decisions(day, moves), day, changes.ids, changes.fresh)


def assert_after_is_a_whole_read(store: StateStore, day: date, before, mark) -> pd.DataFrame:
    after = store.state_after(day, before, mark)
    pd.testing.assert_frame_equal(after, store.state_frame(day))
    return after


def test_the_state_after_a_first_day_is_read_from_an_empty_store(store):
    # Given an empty store, its mark and its (empty) state
    mark, before = store.state_mark(), store.state_frame(DAY1)
    # When day 1 tags every learner, Then the state after is the whole read's, typed the same
    apply(store, DAY1, FIRST_DAY)
    after = assert_after_is_a_whole_read(store, DAY1, before, mark)
    assert after["customer_id"].tolist() == ["a", "b", "c"]


def test_the_state_after_takes_moves_new_learners_and_overrides_set_or_cleared_meanwhile(store):
    # Given day 1, a hold on c that applies on day 2, and the state of day 2 read after a mark
    apply(store, DAY1, [*FIRST_DAY, ("e", None, "ST_001")])
    set_override(store, "c", "ST_001", actor="kim", reason="call", now=WALL)
    set_override(store, "e", "ST_001", actor="kim", reason="call", now=WALL)
    mark, before = store.state_mark(), store.state_frame(DAY2)
    assert before.set_index("customer_id").loc["c", "override_kind"] == "hold"
    # When, before the day commits, b gets a hold on its own tag (no move: an override row
    # only) and c's hold is cleared (no row added), and the day moves a, churns e (closing its
    # hold) and tags a new learner ab (sorted between a and b)
    set_override(store, "b", "ST_001", actor="kim", reason="call", now=WALL)
    store.clear_override("c", words=("kim", "done"), now=WALL)
    moves = [("a", "ST_001", "ST_002"), ("ab", None, "ST_001"), ("e", "ST_001", "ST_006")]
    apply(store, DAY2, moves)
    # Then the state after is the whole read's: every change there, in customer_id order
    after = assert_after_is_a_whole_read(store, DAY2, before, mark).set_index("customer_id")
    assert list(after.index) == ["a", "ab", "b", "c", "e"]
    assert after.loc["b", "override_kind"] == "hold" and pd.isna(after.loc["c", "override_kind"])
    assert after.loc["e", "tag"] == "ST_006" and pd.isna(after.loc["e", "override_tag"])


def test_the_state_after_nothing_changed_is_the_state_before(store):
    apply(store, DAY1, FIRST_DAY)
    mark, before = store.state_mark(), store.state_frame(DAY2)
    apply(store, DAY2, [("a", "ST_001", "ST_001")])  # a day without a move
    assert_after_is_a_whole_read(store, DAY2, before, mark)


@pytest.mark.parametrize("replaced_day", [DAY2, DAY3])
def test_the_state_after_a_replace_reads_every_learner_again(store, replaced_day):
    # Given days 1 and 2, day 2 moving a (and day 3 done when day 3 is the one replaced)
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_002")])
    if replaced_day == DAY3:
        apply(store, DAY3, [("b", "ST_001", "ST_002")])
    mark, before = store.state_mark(), store.state_frame(replaced_day)
    # When the day is replaced by a run that moves a no more (its transition deleted, none
    # added: nothing but the runs tells the state changed)
    moves = [("b", "ST_001", "ST_003")] if replaced_day == DAY2 else [("a", "ST_002", "ST_002")]
    apply(store, replaced_day, moves, run_id="again", replace=True)
    # Then the state after is the whole read's
    after = assert_after_is_a_whole_read(store, replaced_day, before, mark)
    assert after.set_index("customer_id").loc["b", "tag"] == (
        "ST_003" if replaced_day == DAY2 else "ST_001"
    )


def test_the_state_after_an_earlier_day_is_replaced_reads_every_learner_again(store):
    # Given days 1 and 2 (a moved on day 2), and the state of day 3 read after a mark
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_002")])
    mark, before = store.state_mark(), store.state_frame(DAY3)
    # When another process replaces day 2 without the move, then day 3 runs
    apply(store, DAY2, [("a", "ST_001", "ST_001")], run_id="again", replace=True)
    apply(store, DAY3, [("b", "ST_001", "ST_002")])
    # Then a is back on ST_001 in the state after
    after = assert_after_is_a_whole_read(store, DAY3, before, mark)
    assert after.set_index("customer_id").loc["a", "tag"] == "ST_001"


@pytest.mark.parametrize(
    "ids",
    [["a"], ["c", "a", "c"], ["zz", "b"], [], ["a", "b", "c", "d", "zz"]],
    ids=["one", "duplicates", "unknown", "none", "all-and-unknown"],
)
def test_read_tags_of_some_learners_is_read_tags_of_them(store, ids):
    # Given day 1 and day 2 (a moved on day 2, d new), read on day 1: a from the audit log
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_002"), ("d", None, "ST_003")])
    for day in (DAY1, DAY2):
        with store._writer() as conn:
            some = read_tags_of(conn, day, pd.Series(ids, dtype="str"))
            whole = read_tags(conn, day)
        expected = whole[whole["customer_id"].isin(ids)].sort_values("customer_id")
        got = some.sort_values("customer_id")
        assert got["customer_id"].tolist() == expected["customer_id"].tolist()
        assert got["db_tag"].tolist() == expected["db_tag"].tolist()
    # And the temporary table is gone: a second read in the same transaction works
    with store._writer() as conn:
        read_tags_of(conn, DAY2, pd.Series(["a"]))
        assert read_tags_of(conn, DAY2, pd.Series(["a"]))["db_tag"].tolist() == ["ST_002"]


# ---- the state after predicted from the day's moves (``state.state_after_moves``) -------------


def test_the_predicted_state_after_a_first_day_is_what_the_store_reads(store):
    # Given an empty store and day 1's decisions (every learner new, one staying untagged)
    mark, before = store.state_mark(), store.state_frame(DAY1)
    moves = [*FIRST_DAY, ("d", None, None)]
    # When the day commits
    apply(store, DAY1, moves)
    # Then the prediction from the day's moves is the store's state after, frame for frame
    predicted = state_after_moves(before, decisions(DAY1, moves), DAY1)
    pd.testing.assert_frame_equal(predicted, store.state_after(DAY1, before, mark))
    assert predicted.equals(store.state_frame(DAY1))
    # And the store hands no changes of its own: a first load's state is read whole
    assert store.state_changes(DAY1, before, mark) is None


def test_the_predicted_state_after_ends_the_overrides_of_moved_learners(store):
    # Given day 1, holds on b and e, and day 2's state read after a mark
    apply(store, DAY1, [*FIRST_DAY, ("e", None, "ST_001")])
    for customer_id in ("b", "e"):
        set_override(store, customer_id, "ST_001", actor="kim", reason="call", now=WALL)
    mark, before = store.state_mark(), store.state_frame(DAY2)
    # When day 2 moves a, churns e (ending its hold), tags a new ab and leaves b and c
    moves = [("a", "ST_001", "ST_002"), ("ab", None, "ST_001"), ("b", "ST_001", "ST_001"),
             ("e", "ST_001", "ST_006")]  # fmt: skip
    apply(store, DAY2, moves)
    # Then the prediction is the store's state after, b's hold kept and e's ended
    predicted = state_after_moves(before, decisions(DAY2, moves), DAY2)
    after = store.state_after(DAY2, before, mark)
    pd.testing.assert_frame_equal(predicted, after)
    assert predicted.equals(after)
    # And the moves match the store's changes, compared on the changed learners only
    assert matched(store, DAY2, before, mark, moves)
    by_id = predicted.set_index("customer_id")
    assert by_id.loc["b", "override_kind"] == "hold" and pd.isna(by_id.loc["e", "override_kind"])


def test_the_predicted_state_differs_when_the_store_left_a_move_out(store):
    # Given day 1, and day 2's state read after a mark
    apply(store, DAY1, FIRST_DAY)
    mark, before = store.state_mark(), store.state_frame(DAY2)
    # When b is put on hold before day 2 commits (the store then leaves b's move out)
    set_override(store, "b", "ST_001", actor="kim", reason="call", now=WALL)
    moves = [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_003")]
    apply(store, DAY2, moves)
    # Then the prediction from the moves is not the state the store holds
    predicted = state_after_moves(before, decisions(DAY2, moves), DAY2)
    after = store.state_after(DAY2, before, mark)
    assert after.set_index("customer_id").loc["b", "tag"] == "ST_001"
    assert not predicted.equals(after)
    assert not matched(store, DAY2, before, mark, moves)


@pytest.mark.parametrize("held_meanwhile", [False, True])
def test_the_moves_match_unless_an_operator_changed_a_learner_meanwhile(store, held_meanwhile):
    # Given day 1 with an old hold on c (so c is among the changed learners of every later
    # day), and day 2's state read after a mark
    apply(store, DAY1, FIRST_DAY)
    set_override(store, "c", "ST_001", actor="kim", reason="call", now=WALL)
    mark, before = store.state_mark(), store.state_frame(DAY2)
    # When b is put on hold before day 2 commits (or not), and day 2 moves a alone
    if held_meanwhile:
        set_override(store, "b", "ST_001", actor="kim", reason="call", now=WALL)
    moves = [("a", "ST_001", "ST_002")]
    apply(store, DAY2, moves)
    # Then the moves match the store's changes exactly when the whole frames are equal: c's
    # old hold changes nothing, b's new one (a learner the day did not move) does
    predicted = state_after_moves(before, decisions(DAY2, moves), DAY2)
    assert predicted.equals(store.state_after(DAY2, before, mark)) is not held_meanwhile
    assert matched(store, DAY2, before, mark, moves) is not held_meanwhile


def test_the_moves_do_not_match_when_a_moved_learner_holds_another_row(store):
    # Given day 1 and day 2's state read after a mark
    apply(store, DAY1, FIRST_DAY)
    mark, before = store.state_mark(), store.state_frame(DAY2)
    # When day 2 commits a's move to ST_002, but the answers predicted ST_003 for a
    apply(store, DAY2, [("a", "ST_001", "ST_002")])
    # Then the prediction does not match (a's row differs), as the whole frames do not
    predicted_moves = [("a", "ST_001", "ST_003")]
    assert not matched(store, DAY2, before, mark, predicted_moves)
    assert not state_after_moves(before, decisions(DAY2, predicted_moves), DAY2).equals(
        store.state_after(DAY2, before, mark)
    )
