"""Response models: the campaign and behaviour fields of a stored score (issue 12)."""

from __future__ import annotations

from datetime import date

import pytest

from serving.api.responses import _score_out

ROW = {"as_of": date(2026, 5, 1), "p_churn": 0.4, "confidence": 0.7, "priority": "P3",
       "action": "upgrade nurturing campaign", "control": False, "value_at_risk": 2.0,
       "model_version": "3", "run_id": "r1", "p_low": 0.3, "p_high": 0.5}  # fmt: skip


@pytest.mark.parametrize(
    ("stored", "tags"),
    [("BT_002,BT_006", ["BT_002", "BT_006"]), ("", []), (None, None)],
)
def test_a_stored_score_gives_its_behaviour_tags_as_a_list(stored, tags):
    row = ROW | {"campaign_id": "CP_09", "channel": "push", "behaviour_tags": stored}
    out = _score_out(row)
    assert out.behaviour_tags == tags
    assert (out.campaign_id, out.channel) == ("CP_09", "push")


def test_a_store_without_the_campaign_columns_answers_null():
    out = _score_out(ROW)
    assert out.campaign_id is None and out.channel is None and out.behaviour_tags is None
