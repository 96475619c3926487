"""The answers' decisions reuse the day's first decide and equal a full second decide.

``serving.app.day_decisions.answers_decisions`` decides again only the learners whose stored
state the day's commit changed and those the capacity cut moved, then cuts the combined day.
Over several simulated days (moves, holds and campaigns set between days and expiring, a
capacity of a few calls that binds), its decisions and the answers table built on them must be
those of deciding every learner again on the state the day left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import pytest

from rules.codes import codes_of
from serving.app import day_decisions
from serving.app.answers_table import answers_table, answers_tag
from serving.app.day_decisions import DecidedDay, answers_decisions, changed_states, cut_day
from serving.core.assess import Assessment, decide_learners
from serving.infra.answers_file import answers_path, open_answers_file
from serving.infra.store import StateStore
from tests.serving.batches import at, set_override
from tests.serving.fixtures import FIRST_DAY, limited_ruleset, run_batch_day

DAYS = 5
CAPACITY = 4
"""Calls a day: a handful, so that the cut moves learners every day."""


@dataclass(frozen=True)
class Day:
    """One committed batch day: the state it was decided on, its assessment, the state after."""

    as_of: date
    before: pd.DataFrame
    assessment: Assessment
    after: pd.DataFrame


@pytest.fixture(scope="module", params=["model", "rules-only"])
def mode(request, champion):
    return champion if request.param == "model" else None


def set_overrides(store: StateStore, state: pd.DataFrame, day: date, offset: int) -> None:
    """After a day: a short hold, a campaign and a manual move, each on another learner."""
    now = at(day, 10)
    by_tag = {tag: rows["customer_id"].tolist() for tag, rows in state.groupby("tag")}
    wanted = [("ST_002", None, 2), ("ST_004", "ST_005", None), ("ST_001", "ST_002", 1)]
    for from_tag, to_tag, days in wanted:
        learners = by_tag.get(from_tag, [])
        if len(learners) > offset:
            set_override(
                store, learners[offset], to_tag, actor="cs", reason="test", now=now, days=days
            )


@pytest.fixture(scope="module")
def days(mode, simulated_log, tmp_path_factory):
    """``DAYS`` batch days on one store, overrides set after each; the rules' capacity binds."""
    home = tmp_path_factory.mktemp("day-decisions")
    ruleset = limited_ruleset(home / "rules", personal_outreach_per_day=CAPACITY)
    store = StateStore(f"sqlite:///{home / 'state.db'}")
    done = []
    for offset in range(DAYS):
        as_of = FIRST_DAY + timedelta(days=offset)
        before = store.state_frame(as_of)
        batch = run_batch_day(
            as_of, simulated_log, store, mode, ruleset, run_id=f"day-{offset}",
            data_dir=home / "data",
        )  # fmt: skip
        done.append(Day(as_of, before, batch.assessment, store.state_frame(as_of)))
        set_overrides(store, store.state_frame(), as_of, offset)
    yield ruleset, home / "data", done
    store.close()


def spied_decides(monkeypatch) -> list[tuple[int, bool]]:
    """Record (learners, whole_day) of each decide ``answers_decisions`` makes."""
    calls = []

    def spy(features, *args, **options):
        calls.append((len(features), options.get("whole_day", False)))
        return decide_learners(features, *args, **options)

    monkeypatch.setattr(day_decisions, "decide_learners", spy)
    return calls


def test_reused_decisions_equal_a_full_second_decide_every_day(days, monkeypatch):
    ruleset, _, done = days
    calls = spied_decides(monkeypatch)
    witnessed = dict.fromkeys(["changed", "reused", "cut", "override", "partial_days"], 0)
    witnessed["overflow_reused"] = 0
    for day in done:
        # given a committed day: its features, scores and first decide, and the state it left
        features, scores = day.assessment.features, day.assessment.scores
        first = day.assessment.decisions
        ids = features["customer_id"]
        # when the answers decide it again, reusing the first decide, and from scratch
        reused = answers_decisions(
            features, scores, ruleset, day.after, day.as_of, DecidedDay(day.before, first)
        )
        full = decide_learners(features, scores, ruleset, day.after, day.as_of, whole_day=True)
        # then the two frames are equal: rows, order, values and dtypes
        pd.testing.assert_frame_equal(reused, full)
        changed = changed_states(features["customer_id"].array, day.before, day.after)
        # and only the changed learners and some of those the first cut moved were decided
        # again (when none of its callers changed, the others
        # are past the cut again: ``overflow_stays``)
        at_most = int((changed | first.set_index("customer_id").loc[ids, "over_capacity"]).sum())
        learners, whole_day = calls.pop(0)
        assert not whole_day and int(changed.sum()) <= learners <= at_most
        witnessed["partial_days"] += learners < len(features)  # the first load decides everyone
        witnessed["overflow_reused"] += at_most - learners
        witnessed["changed"] += int(changed.sum())
        witnessed["reused"] += int((~changed).sum())
        witnessed["cut"] += int(full["over_capacity"].sum())
        witnessed["override"] += int(day.after["override_tag"].notna().sum())
    # and the days exercised every case: moved and kept learners, a binding cut, overrides
    assert all(count > 0 for count in witnessed.values()), witnessed
    assert witnessed["partial_days"] == DAYS - 1, witnessed


@pytest.mark.parametrize("callers", ["churned before", "churned after"])
def test_a_cut_that_shifts_onto_learners_whose_state_is_the_same_is_redone(
    days, monkeypatch, callers
):
    # given the last day's state, and the same state with the learners the day calls churned
    # (no call for them: the cut reaches further down the list)
    ruleset, _, done = days
    day = done[-1]
    features, scores = day.assessment.features, day.assessment.scores
    decided = decide_learners(features, scores, ruleset, day.after, day.as_of, whole_day=True)
    called = decided["priority"].isin(["P1", "P2"]) & ~decided["control"]
    called = decided.loc[called & ~decided["over_capacity"].astype(bool), "customer_id"]
    churned = day.after.copy()
    rows = churned["customer_id"].isin(called)
    churned.loc[rows, "tag"] = "ST_006"
    churned.loc[rows, ["override_tag", "override_expires", "override_kind"]] = None
    # (churned before: learners called first are past the cut after; churned after: learners
    # past the first cut get a call after)
    before, after = (churned, day.after) if callers == "churned before" else (day.after, churned)
    first = decide_learners(features, scores, ruleset, before, day.as_of, whole_day=True)
    full = decide_learners(features, scores, ruleset, after, day.as_of, whole_day=True)
    # when the answers decide the day on the state after, reusing the first decide
    calls = spied_decides(monkeypatch)
    reused = answers_decisions(
        features, scores, ruleset, after, day.as_of, DecidedDay(before, first)
    )
    # then they are the full decide's, although the cut moved learners whose state is the same
    pd.testing.assert_frame_equal(reused, full)
    over = pd.DataFrame({"first": first.set_index("customer_id")["over_capacity"]})
    over["full"] = full.set_index("customer_id")["over_capacity"]
    shifted = over[(over["first"] != over["full"]) & ~over.index.isin(called)]
    assert len(called) == CAPACITY and len(shifted) > 0
    [(redone, whole_day)] = calls  # one decide, of a part of the day
    assert not whole_day and CAPACITY <= redone < len(features)


def test_the_batch_writes_the_answers_a_full_second_decide_gives(days, mode):
    ruleset, data_dir, done = days
    last = done[-1]  # only the latest day's file is kept
    # given the answers file the batch wrote for its last day
    tag = answers_tag(None if mode is None else mode.version, ruleset)
    written = open_answers_file(answers_path(data_dir, last.as_of, tag)).table
    # when the same day's answers are built by deciding every learner again
    full = answers_table(
        last.assessment.features, last.assessment.scores, ruleset=ruleset, state=last.after,
        as_of=last.as_of, model_version=last.assessment.model_version,
    )  # fmt: skip
    # then the file holds that table, column for column
    assert written.schema.equals(full.schema, check_metadata=True)
    for name in full.column_names:
        assert written.column(name).equals(full.column(name)), name


def test_a_state_row_that_differs_in_any_column_is_changed():
    # given the same learners in two state frames, one column of one learner changed per case
    base = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "tag": ["ST_001", "ST_002", "ST_003", "ST_004"],
            "since": pd.to_datetime(["2026-05-01"] * 4),
            "override_tag": [None, "ST_002", None, None],
            "override_expires": pd.to_datetime([None, "2026-05-20", None, None]),
            "override_kind": [None, "hold", None, None],
        }
    )
    after = base.copy()
    after.loc[0, "since"] = pd.Timestamp("2026-05-09")
    after.loc[1, "override_expires"] = pd.NaT
    # when compared, with a learner known to one frame only and one known to neither
    ids = pd.array(["a", "b", "c", "d", "new", "gone"], dtype=object)
    after = pd.concat([after, pd.DataFrame({"customer_id": ["new"], "tag": ["ST_001"]})])
    before = pd.concat([base, pd.DataFrame({"customer_id": ["gone"], "tag": ["ST_001"]})])
    changed = changed_states(ids, before, after.reset_index(drop=True))
    # then exactly the moved, the released and the one-sided learners count as changed
    assert changed.tolist() == [True, True, False, False, True, True]


def test_the_uncut_decisions_the_batch_keeps_answer_without_redeciding_the_cut(days, monkeypatch):
    ruleset, _, done = days
    witnessed = dict.fromkeys(["changed", "over_reused", "override", "new", "moved_back"], 0)
    for day in done:
        # given a day's decide before its cut, cut as the batch cuts it (keeping what it moved)
        features, scores = day.assessment.features, day.assessment.scores
        uncut = decide_learners(features, scores, ruleset, day.before, day.as_of)
        decided = cut_day(ruleset, day.before, uncut, features)
        # then its decisions are the ones the batch committed, and those of a whole-day decide
        pd.testing.assert_frame_equal(decided.decisions, day.assessment.decisions)
        # when the answers reuse it, and when every learner is decided again on the state after
        calls = spied_decides(monkeypatch)
        reused = answers_decisions(features, scores, ruleset, day.after, day.as_of, decided)
        full = decide_learners(features, scores, ruleset, day.after, day.as_of, whole_day=True)
        # then they are equal, and only the learners whose state changed were decided again
        pd.testing.assert_frame_equal(reused, full)
        ids = features["customer_id"].array
        changed = changed_states(ids, day.before, day.after)
        assert calls == [(int(changed.sum()), False)]
        over_first = decided.decisions.set_index("customer_id").loc[ids, "over_capacity"]
        over_full = full.set_index("customer_id").loc[ids, "over_capacity"]
        witnessed["changed"] += int(changed.sum())
        witnessed["over_reused"] += int((over_first.to_numpy(bool) & ~changed).sum())
        witnessed["moved_back"] += int(
            (over_first.to_numpy(bool) & ~over_full.to_numpy(bool)).sum()
        )
        unchanged_ids = pd.Index(ids)[~changed]
        held = day.after["override_tag"].notna() & day.after["customer_id"].isin(unchanged_ids)
        witnessed["override"] += int(held.sum())
        witnessed["new"] += int((~pd.Index(ids).isin(day.before["customer_id"])).sum())
    # and the days held each case: learners whose state changed, unchanged learners past the
    # cut, unchanged learners with an override, new learners, and learners the cut gave back
    assert all(count > 0 for count in witnessed.values()), witnessed


def test_a_moved_learner_without_its_uncut_row_is_not_guessed(days, monkeypatch):
    # given the last day's cut decide, its uncut rows missing one learner the cut moved
    ruleset, _, done = days
    day = done[-1]
    features, scores = day.assessment.features, day.assessment.scores
    uncut = decide_learners(features, scores, ruleset, day.before, day.as_of)
    decided = cut_day(ruleset, day.before, uncut, features)
    partial = DecidedDay(day.before, decided.decisions, decided.uncut.iloc[1:])
    # when the answers reuse it
    calls = spied_decides(monkeypatch)
    reused = answers_decisions(features, scores, ruleset, day.after, day.as_of, partial)
    # then every learner is decided again (one whole-day decide), and the answers are right
    assert calls == [(len(features), True)]
    full = decide_learners(features, scores, ruleset, day.after, day.as_of, whole_day=True)
    pd.testing.assert_frame_equal(reused, full)


@pytest.mark.parametrize(("before_dtype", "after_dtype"), [("str", "str"), ("str", object)])
def test_a_changed_text_of_the_state_is_seen_whatever_the_columns_dtypes(before_dtype, after_dtype):
    # given text columns: a tag changed, an override set, one cleared, nulls on both sides
    def state(tags: list, overrides: list, dtype) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "customer_id": pd.Series(["a", "b", "c", "d", "e"], dtype=dtype),
                "tag": pd.Series(tags, dtype=dtype),
                "override_tag": pd.Series(overrides, dtype=dtype),
            }
        )

    before = state(
        ["ST_001", "ST_002", "ST_003", "ST_004", None],
        [None, None, "ST_003", "é", None],
        before_dtype,
    )
    after = state(
        ["ST_002", "ST_002", "ST_003", "ST_004", None],
        [None, "ST_002", None, "é", None],
        after_dtype,
    )
    # when compared
    changed = changed_states(pd.array(["a", "b", "c", "d", "e"], dtype=object), before, after)
    # then the three learners whose text changed are changed; equal texts and nulls are not
    assert changed.tolist() == [True, True, True, False, False]


def test_state_rows_the_caller_found_give_the_changes_a_lookup_gives():
    # given two states and the ids' rows in the later one, looked up by the caller
    before = pd.DataFrame({"customer_id": ["a", "b", "c"], "tag": ["ST_001", "ST_002", "ST_003"]})
    after = pd.DataFrame({"customer_id": ["c", "a", "d"], "tag": ["ST_003", "ST_004", "ST_001"]})
    ids = pd.array(["a", "b", "c", "d", "e"], dtype=object)
    rows = codes_of(ids, after["customer_id"].array)
    # when compared with and without them, then the changes are the same and right
    expected = [True, True, False, True, False]
    assert changed_states(ids, before, after, after_rows=rows).tolist() == expected
    assert changed_states(ids, before, after).tolist() == expected
