"""serving.core.parts: a large day scored in parts, each decided while the next is scored."""

from __future__ import annotations

import threading
from datetime import timedelta

import pandas as pd
import pytest

import serving.core.assess as assess_module
from features.windows import build_features
from serving.core import parts
from serving.core.assess import AssessOptions, assess
from serving.core.frames import empty_state
from serving.core.state import state_after_moves
from tests.serving.fixtures import FIRST_DAY

LATER = FIRST_DAY + timedelta(days=7)
PRIORITIES = ("P1", "P2", "P3")
NO_STATE = empty_state()


@pytest.fixture(scope="module")
def later_day(simulated_log, champion, ruleset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every learner's features a week after FIRST_DAY, and the state FIRST_DAY's moves left
    (learners on every kind of tag, some new since)."""
    log = simulated_log
    first = build_features(log.events, log.customers, as_of=[FIRST_DAY])
    options = {"champion": champion, "ruleset": ruleset, "state": empty_state()}
    decided = assess(first, **options, as_of=FIRST_DAY)
    state = state_after_moves(empty_state(), decided.decisions, FIRST_DAY)
    return build_features(log.events, log.customers, as_of=[LATER]), state


def _assessed(features, state, champion, ruleset):
    options = AssessOptions(check_output=True)
    return assess(
        features, champion=champion, ruleset=ruleset, state=state, as_of=LATER, options=options
    )


def test_a_day_in_parts_is_the_day_scored_and_decided_whole(
    later_day, champion, ruleset, monkeypatch
):
    # given a day of learners, some known, assessed whole
    features, state = later_day
    monkeypatch.setattr(parts, "PART_ROWS", 10 * len(features))
    whole = _assessed(features, state, champion, ruleset)
    # when the same day is assessed in parts of 16 learners
    calls = []

    def counted(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return assess_module.decide_learners.__wrapped__(*args, **kwargs)

    counted.__wrapped__ = assess_module.decide_learners
    monkeypatch.setattr(assess_module, "decide_learners", counted)
    monkeypatch.setattr(parts, "PART_ROWS", 16)
    in_parts = _assessed(features, state, champion, ruleset)
    # then each part was decided on the thread beside the scoring, and the scores and the
    # decisions (their order too: P1 first) are the whole day's
    assert len(calls) == -(-len(features) // 16) > 2
    assert all(name.startswith("lstep-decide") for name in calls)
    pd.testing.assert_frame_equal(in_parts.scores, whole.scores)
    pd.testing.assert_frame_equal(in_parts.decisions, whole.decisions)
    assert in_parts.decisions["changed"].any() and (~in_parts.decisions["changed"]).any()


def test_a_learner_in_two_parts_is_refused(later_day, champion, ruleset, monkeypatch):
    # given a day whose first learner comes again in its last part
    features, state = later_day
    twice = pd.concat([features, features.head(1)], ignore_index=True)
    monkeypatch.setattr(parts, "PART_ROWS", 16)
    # when it is assessed in parts, then the repeat is named, as a whole day's would be
    first = features["customer_id"].iloc[0]
    with pytest.raises(ValueError, match=f"1 rows repeat a customer_id.*{first}"):
        _assessed(twice, state, champion, ruleset)


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [f"C{row:03d}" for row in range(rows)]})


def _decisions(part: pd.DataFrame) -> pd.DataFrame:
    """Decisions of a part in ``decide``'s order for PRIORITIES: P1 rows (even ids) first."""
    ids = part["customer_id"].to_numpy(str)
    even = pd.Series([int(text[1:]) % 2 == 0 for text in ids])
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "priority": pd.Categorical(even.map({True: "P1", False: "P3"}), PRIORITIES),
            "value_at_risk": 1.0,
            "p_churn": 0.5,
        }
    )
    return frame.sort_values(["priority", "customer_id"]).reset_index(drop=True)


def _no_stage(_name):
    from contextlib import nullcontext

    return nullcontext()


ORDER_AND_STAGE = (PRIORITIES, _no_stage)


def test_each_part_is_decided_while_the_next_one_is_scored(monkeypatch):
    # given parts that wait for each other: the scoring of a part for the decisions of the one
    # before to begin, those decisions for the next part's scoring to begin (done one after the
    # other, in either order, one of them waits in vain)
    monkeypatch.setattr(parts, "PART_ROWS", 4)
    scoring, deciding = ([threading.Event() for _ in range(3)] for _ in range(2))
    met = []

    def index(part):
        return int(part["customer_id"].iloc[0][1:]) // 4

    def score(part):
        scoring[index(part)].set()
        if index(part):
            met.append(deciding[index(part) - 1].wait(timeout=10))
        return part.assign(p_churn=0.5)

    def decide(part, scores, state):
        deciding[index(part)].set()
        if index(part) < 2:
            met.append(scoring[index(part) + 1].wait(timeout=10))
        return _decisions(part)

    # when a day of three parts is scored and decided
    day = _frame(12)
    scores, decisions = parts.scored_and_decided(day, NO_STATE, score, decide, *ORDER_AND_STAGE)
    # then every part but the last was decided while the next was scored, and the result is
    # the whole day's: scores in row order, decisions in decide's order across the parts
    assert met == [True] * 4
    assert scores["customer_id"].tolist() == _frame(12)["customer_id"].tolist()
    pd.testing.assert_frame_equal(decisions, _decisions(_frame(12)))


def test_a_part_that_fails_fails_the_day_and_no_later_part_is_decided(monkeypatch):
    # given a scorer that fails on the second of three parts
    monkeypatch.setattr(parts, "PART_ROWS", 4)
    decided = []

    def score(part):
        if part["customer_id"].iloc[0] == "C004":
            raise ValueError("part 2 cannot be scored")
        return part

    def decide(part, scores, state):
        decided.append(part["customer_id"].iloc[0])
        return _decisions(part)

    # when the day is scored and decided, then the scorer's error is the day's
    with pytest.raises(ValueError, match="part 2 cannot be scored"):
        parts.scored_and_decided(_frame(12), NO_STATE, score, decide, *ORDER_AND_STAGE)
    assert not {"C004", "C008"} & set(decided)  # the first part's may have begun, or not


def test_a_part_whose_decisions_fail_fails_the_day(monkeypatch):
    # given rules that fail on the first part
    monkeypatch.setattr(parts, "PART_ROWS", 4)

    def decide(part, scores, state):
        raise ValueError(f"cannot decide {part['customer_id'].iloc[0]}")

    # when the day is scored and decided, then that error is the day's
    with pytest.raises(ValueError, match="cannot decide C000"):
        parts.scored_and_decided(_frame(12), NO_STATE, lambda part: part, decide, *ORDER_AND_STAGE)


@pytest.mark.parametrize(
    "bad_row",
    [
        pytest.param(lambda day, state: state.iloc[[0]], id="a learner of the day twice"),
        pytest.param(
            lambda day, state: state.iloc[[0]].assign(customer_id="OUTSIDER", tag="ST_999"),
            id="an unknown tag of a learner outside the day",
        ),
    ],
)
def test_the_state_is_checked_whole_in_parts(later_day, champion, ruleset, monkeypatch, bad_row):
    # given a day whose state holds one bad row
    features, state = later_day
    state = pd.concat([state, bad_row(features, state)], ignore_index=True)
    monkeypatch.setattr(parts, "PART_ROWS", 10 * len(features))
    with pytest.raises(ValueError) as whole:
        _assessed(features, state, champion, ruleset)
    # when the day is assessed in parts, then the same error is raised (each part is given its
    # learners' state; the rows of learners outside the day go with the first part)
    monkeypatch.setattr(parts, "PART_ROWS", 16)
    with pytest.raises(type(whole.value)) as in_parts:
        _assessed(features, state, champion, ruleset)
    assert str(in_parts.value).split("\n")[0] == str(whole.value).split("\n")[0]


def test_a_day_of_one_part_is_not_cut():
    # a day up to one part's size is scored and decided whole: nothing to overlap
    assert not parts.in_parts(parts.PART_ROWS)
    assert parts.in_parts(parts.PART_ROWS + 1)
