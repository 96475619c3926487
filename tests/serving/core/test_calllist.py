"""The call list: urgent learners outside the control group, in call order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rules.lifetime import LIFETIME_COLUMNS
from serving.core.calllist import VALUE_FIELDS, call_list, urgent_rows, value_texts


def test_call_list_keeps_p1_p2_outside_control_ordered_by_priority_then_value():
    # given scores of mixed priorities, one urgent learner in the control group
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "priority": ["P2", "P1", "P1", "P3", "P1"],
            "control": [False, False, False, False, True],
            "value_at_risk": [90.0, 10.0, 30.0, 99.0, 99.0],
            "p_churn": [0.5, 0.9, 0.4, 0.5, 0.9],
        }
    )
    # when the call list of two is drawn
    listed = call_list(scores, top=2)
    # then P1 comes before P2, higher value first; P3 and the control learner never appear
    assert listed["customer_id"].tolist() == ["c", "b"]
    assert call_list(scores, top=10)["customer_id"].tolist() == ["c", "b", "a"]


def test_call_list_puts_the_likelier_to_leave_first_among_equal_values_as_the_engine_does():
    # given three P1 learners worth the same, at p 0.7, 0.95 and no score
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "priority": ["P1", "P1", "P1"],
            "control": [False, False, False],
            "value_at_risk": [50.0, 50.0, 50.0],
            "p_churn": [0.7, 0.95, float("nan")],
        }
    )
    # when the call list is drawn from scores read back in any order
    listed = call_list(scores, top=3)
    # then p_churn breaks the tie (no score last), as rules.decisions.decision_order does
    assert listed["customer_id"].tolist() == ["b", "a", "c"]


PRIORITIES = ["P3", "P1", None, "P2", "P4", "P1"]


@pytest.mark.parametrize(
    "priority",
    [
        pd.Categorical(PRIORITIES, categories=["P1", "P2", "P3", "P4"], ordered=True),
        pd.array(PRIORITIES, dtype="str"),
        pd.array(PRIORITIES, dtype=object),
    ],
    ids=["the engine's categorical", "stored text", "objects"],
)
def test_urgent_rows_are_the_p1_and_p2_rows_whatever_the_priority_dtype(priority):
    # given decisions or stored scores, a priority missing
    frame = pd.DataFrame({"customer_id": list("abcdef"), "priority": priority})
    # when / then the P1 and P2 rows, in the frame's order; no priority is not urgent
    assert urgent_rows(frame)["customer_id"].tolist() == ["b", "d", "f"]


def test_the_value_fields_are_value_at_risk_and_the_rules_lifetime_columns():
    assert ("value_at_risk", *LIFETIME_COLUMNS) == VALUE_FIELDS


def test_value_texts_print_a_score_and_a_dash_for_what_is_missing():
    # given a scored row, and one stored before the projection (no such keys) without a score
    scored = {"value_at_risk": 1234.5, "expected_months": 4.976, "projected_value": np.nan}
    older = {"value_at_risk": None}
    # when / then money with two decimals, months with one, the missing text for the rest
    assert value_texts(scored) == {
        "value_at_risk": "1,234.50", "expected_months": "5.0", "projected_value": "—",
    }  # fmt: skip
    assert set(value_texts(older, missing="-").values()) == {"-"}
