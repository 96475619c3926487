"""The call list: urgent learners outside the control group, in call order."""

from __future__ import annotations

import pandas as pd

from serving.core.calllist import call_list


def test_call_list_keeps_p1_p2_outside_control_ordered_by_priority_then_value():
    # given scores of mixed priorities, one urgent learner in the control group
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "priority": ["P2", "P1", "P1", "P3", "P1"],
            "control": [False, False, False, False, True],
            "value_at_risk": [90.0, 10.0, 30.0, 99.0, 99.0],
        }
    )
    # when the call list of two is drawn
    listed = call_list(scores, top=2)
    # then P1 comes before P2, higher value first; P3 and the control learner never appear
    assert listed["customer_id"].tolist() == ["c", "b"]
    assert call_list(scores, top=10)["customer_id"].tolist() == ["c", "b", "a"]
