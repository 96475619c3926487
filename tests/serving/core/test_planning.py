"""Planning of a store write, on tiny frames: score rows, which moves apply, what the run says."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from serving.core import frames
from serving.core.planning import (
    checked_decisions,
    plan_transitions,
    run_summary,
    score_rows,
    transition_rows,
)
from serving.core.tags import STATUS_TAGS
from tests.serving.batches import decisions

DAY = date(2024, 3, 2)
NOW = datetime(2024, 3, 2, 2, tzinfo=UTC)
MOVES = [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_001"), ("c", "ST_004", "ST_006")]


def model_scores(day: date = DAY, ids=("a", "b", "c")) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "as_of": pd.Timestamp(day),
            "p_churn": 0.9,
            "p_low": 0.8,
            "p_high": 0.95,
            "confidence": 0.8,
        }
    )


def test_score_rows_refuse_model_scores_of_another_day():
    with pytest.raises(ValueError, match=r"3 rows have an as_of other than 2024-03-02 .*'a'"):
        score_rows(DAY, decisions(DAY, MOVES), model_scores(date(2024, 3, 1)), "r", "7")


def test_score_rows_take_what_the_rules_used_and_the_model_fills_the_gaps():
    # given decisions whose p_churn is what the rules saw, one of them missing
    decided = decisions(DAY, MOVES)
    decided.loc[decided["customer_id"] == "b", ["p_churn", "confidence"]] = None
    # when the day's score rows are planned
    rows = score_rows(DAY, decided, model_scores(), "run-1", "7").set_index("customer_id")
    # then the rules' values win, the model fills the gap, and the run and model are stamped
    assert rows.loc["a", "p_churn"] == 0.4 and rows.loc["b", "p_churn"] == 0.9
    assert rows.loc["b", "confidence"] == 0.8 and rows.loc["a", "p_low"] == 0.8
    assert set(rows["model_version"]) == {"7"} and set(rows["run_id"]) == {"run-1"}
    assert set(rows["as_of"]) == {DAY}


def test_categorical_decisions_check_as_the_same_decisions_in_text():
    # given the engine's categorical columns, categories in no particular order, some missing
    decided = decisions(DAY, MOVES)
    decided["to_tag"] = decided["to_tag"].cat.reorder_categories(list(reversed(STATUS_TAGS)))
    decided["held"] = pd.Categorical([None, "cooldown", None], categories=["override", "cooldown"])
    as_text = decided.astype({name: object for name in decided.select_dtypes("category")})
    # when checked
    checked = checked_decisions(DAY, decided)
    # then they are what pandera makes of the same values as text, value for value and dtype
    expected = frames.validate_frame(as_text, frames.DECISIONS_SCHEMA)
    pd.testing.assert_frame_equal(checked, expected, check_exact=True)
    assert checked["held"].tolist()[1] == "cooldown" and checked["held"].isna().sum() == 2


def test_a_categorical_tag_outside_the_list_is_still_refused():
    # given a decision whose categorical to_tag is no status tag
    decided = decisions(DAY, MOVES)
    decided["to_tag"] = decided["to_tag"].cat.add_categories(["ST_999"])
    decided.loc[decided["customer_id"] == "a", "to_tag"] = "ST_999"
    # when checked, then the schema names the column
    with pytest.raises(ValueError, match=r"decisions: .*to_tag"):
        checked_decisions(DAY, decided)


def test_score_rows_follow_the_decisions_and_line_the_model_up_by_learner():
    # given decisions c, a, b and model scores of b and a only, in another order
    decided = decisions(DAY, [("c", "ST_001", "ST_001"), *MOVES[:2]])
    model = model_scores(ids=("b", "a")).assign(p_low=[0.2, 0.1], p_high=[0.6, 0.5])
    model.loc[0, "p_churn"] = 0.55
    decided.loc[decided["customer_id"] == "b", "p_churn"] = None
    # when the score rows are planned
    rows = score_rows(DAY, decided, model, "r", "7")
    # then one row per decision in their order, each with its own learner's interval
    assert rows["customer_id"].tolist() == ["c", "a", "b"]
    assert rows["p_low"].tolist()[1:] == [0.1, 0.2] and rows["p_high"].tolist()[1:] == [0.5, 0.6]
    assert np.isnan(rows.loc[0, "p_low"]) and rows.loc[0, "p_churn"] == 0.4
    assert rows.loc[2, "p_churn"] == 0.55  # b's gap filled by b's own score
    assert list(rows.index) == [0, 1, 2]


def test_score_rows_refuse_a_score_without_a_decision():
    with pytest.raises(ValueError, match=r"1 customers have a score but no decision.*'ghost'"):
        score_rows(DAY, decisions(DAY, MOVES), model_scores(ids=("a", "ghost")), "r", "7")


def tags(**current: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(current), "db_tag": list(current.values())})


def test_a_move_to_st006_of_a_learner_already_churned_is_skipped_as_such():
    # given c is churned in the store already, and a is overridden
    plan = plan_transitions(
        decisions(DAY, MOVES), tags(a="ST_001", b="ST_001", c="ST_006"), overridden={"a"}
    )
    # then nothing applies, and each skip says why
    assert plan.applied.empty
    assert plan.skipped == {"overridden": ["a"], "stale_from_tag": [], "already_churned": ["c"]}


def test_the_run_summary_counts_everything_the_day_did():
    # given a day: three decisions, one held by a cooldown, two moves applied
    decided = decisions(DAY, MOVES)
    decided["held"] = pd.Categorical([None, "cooldown", None])
    plan = plan_transitions(decided, tags(a="ST_001", b="ST_001", c="ST_004"), overridden=set())
    rows = score_rows(DAY, decided, None, "r", None)
    # then the summary says so, key by key
    assert run_summary(decided, rows, plan) == {
        "decisions": 3,
        "scores": 3,
        "changed_decisions": 2,
        "held": {"cooldown": 1},
        "over_capacity": 0,
        "transitions": 2,
        # every tag is counted (the rules engine's tags are categories), moved to or not
        "transitions_by_tag": {tag: int(tag in ("ST_004", "ST_006")) for tag in STATUS_TAGS},
        "skipped": {"overridden": 0, "stale_from_tag": 0, "already_churned": 0},
        "skipped_examples": {},
    }


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([True, False, True], 2), ([None, None, None], 0), ([True, None, False], 1)],
)
def test_the_run_summary_counts_the_learners_the_capacity_moved(flags, expected):
    # given a day whose capacity moved some learners (null: the capacity was not applied)
    decided = decisions(DAY, MOVES)
    decided["over_capacity"] = pd.array(flags, dtype="boolean")
    plan = plan_transitions(decided, tags(a="ST_001", b="ST_001", c="ST_004"), overridden=set())
    # then the summary counts them
    summary = run_summary(decided, score_rows(DAY, decided, None, "r", None), plan)
    assert summary["over_capacity"] == expected


def test_transition_rows_carry_days_as_dates_and_the_run():
    plan = plan_transitions(decisions(DAY, MOVES), tags(a="ST_001", c="ST_004"), set())
    rows = transition_rows(plan.applied, "run-1", "7", NOW)
    assert rows["as_of"].tolist() == [DAY, DAY]
    assert all(type(day) is date for day in rows["as_of"])
    assert set(rows["run_id"]) == {"run-1"} and set(rows["model_version"]) == {"7"}
    assert rows["actor"].isna().all() and (rows["created_at"] == NOW).all()
