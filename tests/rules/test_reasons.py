"""Tests for rules.reasons: why a rule moved or held a learner, in words (table-driven)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rules import Wording
from rules.engine import decide
from rules.reasons import why_texts
from rules.schemas import DECISION_COLUMNS
from serving.core.records import rule_wording
from tests.rules.casebook import load_casebook, scored_frame, state_frame

BOOK = load_casebook("reasons.yaml")


@pytest.fixture(scope="module")
def wording() -> Wording:
    """What serving passes: the catalog's labels, phrases, evidence and risk indicators."""
    return rule_wording()


def _decided(ruleset, wording: Wording | None) -> pd.DataFrame:
    decisions = decide(
        ruleset, state_frame(BOOK), scored_frame(BOOK), BOOK["as_of"], wording=wording
    )
    return decisions.set_index("customer_id")


@pytest.mark.parametrize("case", [pytest.param(case, id=case["name"]) for case in BOOK["cases"]])
def test_a_decision_records_the_facts_its_rule_fired_on(ruleset, wording, case):
    # given the reasons cases decided in one batch with the catalog's wording
    decided = _decided(ruleset, wording).loc[case["customer_id"]]
    # then each case's decision and its words are the expected ones
    for column, expected in case["expect"].items():
        actual = decided[column]
        if expected is None:
            assert pd.isna(actual), f"{column}: expected null, got {actual!r}"
        else:
            assert actual == expected, f"{column}: {actual!r} != {expected!r}"


def test_why_is_the_last_decision_column_and_a_string(ruleset, wording):
    decisions = _decided(ruleset, wording)
    assert DECISION_COLUMNS[-1] == "why"
    assert decisions["why"].dtype == "str"


def test_without_wording_leaves_read_by_feature_name_and_the_count_is_not_expanded(ruleset):
    # given the R04 case on four indicators, decided without a wording
    decided = _decided(ruleset, None)
    four = next(c for c in BOOK["cases"] if c["name"].startswith("R04 on four indicators"))
    # then the count leaf reads as the count, by its column name
    assert decided.loc[four["customer_id"], "why"] == "risk_indicator_count 4 ≥ 4"


def test_a_learner_neither_moved_nor_held_gets_no_words(ruleset, wording):
    # given a rule that fires for every learner (R09: all 30+ days inactive)
    scored = scored_frame(BOOK).assign(days_since_last_event=45.0)
    rows = len(scored)
    columns = {name: scored[name].astype(float) for name in ["days_since_last_event"]}
    winner = np.full(rows, [rule.id for rule in ruleset.rules].index("R09"))
    # when only the even rows are to be worded
    needed = np.arange(rows) % 2 == 0
    words = why_texts(ruleset, columns, winner, needed, wording)
    # then the others are null and the even ones say it
    assert list(pd.isna(words)) == [not flag for flag in needed]
    assert set(words[needed]) == {"no activity for 45 days"}
