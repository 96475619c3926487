"""The value page's intervention ROI, on a tiny outbox whose answer is counted by hand.

CP_01 (given): 30 treated learners T00..T29 and 30 control learners K00..K29, first messages
planned and due on 1 March (e-mail); the log ends on 31 March, so every 14-day window is complete.

- re-engaged within 14 days: T00..T14 (15 of 30 = 0.5) and K00..K02 (3 of 30 = 0.1):
  uplift 0.4; pooled 18/60 = 0.3, MDE = 2.8016 x sqrt(0.21 x 2/30) = 0.33 <= 0.4: measured;
- every treated learner's value at risk on 1 March is 10: 300 in all; value saved 0.4 x 300 = 120;
- sent: 29 e-mails (T29's was dead: treated, unreached, free) x 0.01 + T00 and T01's CSM tasks
  on 3 March x 25 = 50.29, 31 contacts; ROI = 120 / 50.29 = 2.386;
- not counted: T00's second run (planned 10 March, a CSM task: not the first exposure), L00's run
  planned 25 March (window open until 8 April: pending), T00's value of 999 on 2 March (not the
  trigger day), the control's values.

CP_02: 2 treated, 1 control: far too few to tell, so its ROI is not measured (NaN).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from rules.costs import ChannelCosts
from serving.app.campaign_effect import EffectSettings, first_runs, uplift_interval
from serving.app.dashboard_value import (
    ROI_COLUMNS,
    campaign_roi,
    learner_roi,
    roi_of_learners,
    run_costs,
    spend_by_channel,
)
from serving.core.messages import DEAD, SENT, SUPPRESSED, message_key

MARCH = date(2026, 3, 1)
AS_OF = date(2026, 3, 31)
COSTS = ChannelCosts().by_channel()
SETTINGS = EffectSettings(min_effect=0.4)


def _message(customer, campaign="CP_01", planned=MARCH, step=0, delay=0, **fields) -> dict:
    control = fields.get("control", False)
    return {
        "message_id": message_key(planned, customer, campaign, step),
        "planned_on": pd.Timestamp(planned),
        "due_on": pd.Timestamp(planned + timedelta(days=delay)),
        "customer_id": customer, "campaign_id": campaign, "step": step,
        "channel": fields.get("channel", "email"), "template_id": "t", "variant": "",
        "control": control, "context": "{}",
        "state": fields.get("state", SUPPRESSED if control else SENT),
    }  # fmt: skip


def _outbox() -> pd.DataFrame:
    rows = [_message(f"T{i:02d}") for i in range(29)]
    rows.append(_message("T29", state=DEAD))
    rows += [_message(f"K{i:02d}", control=True) for i in range(30)]
    rows += [_message(f"T0{i}", step=1, delay=2, channel="csm_task") for i in (0, 1)]
    rows.append(_message("T00", planned=MARCH + timedelta(days=9), channel="csm_task"))
    rows.append(_message("L00", planned=date(2026, 3, 25)))
    rows += [
        _message("A0", "CP_02"),
        _message("A1", "CP_02"),
        _message("B0", "CP_02", control=True),
    ]
    return pd.DataFrame(rows)


def _events() -> pd.DataFrame:
    back = [f"T{i:02d}" for i in range(15)] + ["K00", "K01", "K02", "A0"]
    rows = [(who, "2026-03-05T10:00:00Z", "session") for who in back]
    rows += [("T20", "2026-03-06T10:00:00Z", "quiz_attempted")]  # not coming back
    rows += [("K29", "2026-03-31T09:00:00Z", "quiz_attempted")]  # the log's last day
    events = pd.DataFrame(rows, columns=["customer_id", "ts", "event_type"])
    return events.assign(ts=pd.to_datetime(events["ts"]))


def _scores() -> pd.DataFrame:
    who = [f"T{i:02d}" for i in range(30)] + ["K00", "A0", "A1", "T00"]
    values = [10.0] * 30 + [500.0, 7.0, 3.0, 999.0]
    days = [MARCH] * 33 + [MARCH + timedelta(days=1)]
    return pd.DataFrame(
        {"as_of": pd.to_datetime(days), "customer_id": who, "value_at_risk": values}
    )


@pytest.fixture(scope="module")
def roi() -> pd.DataFrame:
    table = campaign_roi(_outbox(), _empty_feedback(), _events(), _scores(), AS_OF, COSTS, SETTINGS)
    return table.set_index("campaign_id")


def _empty_feedback() -> pd.DataFrame:
    return pd.DataFrame(columns=["message_id", "kind", "recorded_at"])


def test_roi_is_the_measured_uplift_times_the_value_at_risk_over_what_was_spent(roi):
    cp01 = roi.loc["CP_01"]
    assert (cp01["treated"], cp01["control"], cp01["contacts"]) == (30, 30, 31)
    assert cp01["pending"] == 1  # L00, whose window is still open
    assert cp01["uplift"] == pytest.approx(0.4)
    assert cp01["value_at_risk"] == pytest.approx(300.0)
    assert cp01["cost"] == pytest.approx(50.29)
    assert cp01["value_saved"] == pytest.approx(120.0)
    assert cp01["roi"] == pytest.approx(120.0 / 50.29)
    assert bool(cp01["measured"])


def test_the_uplifts_interval_is_carried_through_to_the_roi(roi):
    # the interval is campaign_effect's Newcombe interval of 15/30 against 3/30
    _, low, high = uplift_interval((15, 30), (3, 30))
    cp01 = roi.loc["CP_01"]
    assert (cp01["ci_low"], cp01["ci_high"]) == pytest.approx((low, high))
    assert (cp01["saved_low"], cp01["saved_high"]) == pytest.approx((low * 300, high * 300))
    assert (cp01["roi_low"], cp01["roi_high"]) == pytest.approx(
        (low * 300 / 50.29, high * 300 / 50.29)
    )
    assert cp01["roi_low"] < cp01["roi"] < cp01["roi_high"]


def test_a_campaign_too_small_to_tell_has_no_roi(roi):
    cp02 = roi.loc["CP_02"]
    assert (cp02["treated"], cp02["control"]) == (2, 1)
    assert not bool(cp02["measured"])
    assert np.isnan(cp02["roi"]) and np.isnan(cp02["roi_low"]) and np.isnan(cp02["roi_high"])
    assert cp02["value_at_risk"] == pytest.approx(10.0)  # A0 7 + A1 3


def test_a_segments_roi_is_everyones_learner_rows_narrowed_to_it():
    # given everyone's rows, and a segment: the even treated and control learners, A0 and B0
    rows = learner_roi(_outbox(), _empty_feedback(), _events(), _scores(), AS_OF, COSTS, SETTINGS)
    segment = {f"{arm}{i:02d}" for arm in "TK" for i in range(0, 30, 2)} | {"A0", "B0"}
    # when the rows are narrowed to the segment and counted
    narrowed = roi_of_learners(rows[rows["customer_id"].isin(segment)], SETTINGS)
    # then it is the ROI of the segment's own outbox, computed from scratch
    outbox = _outbox()
    alone = outbox[outbox["customer_id"].isin(segment)]
    direct = campaign_roi(alone, _empty_feedback(), _events(), _scores(), AS_OF, COSTS, SETTINGS)
    pd.testing.assert_frame_equal(narrowed, direct)
    # counted by hand: T00..T28 even (15, of whom T00..T14 even came back: 8), K00..K28 even
    # (15, K00 and K02 back: 2); each worth 10; 15 e-mails, T28's sent too, and T00's CSM task
    cp01 = narrowed.set_index("campaign_id").loc["CP_01"]
    assert (cp01["treated"], cp01["control"], cp01["contacts"]) == (15, 15, 16)
    assert cp01["uplift"] == pytest.approx(8 / 15 - 2 / 15)
    assert cp01["value_at_risk"] == pytest.approx(150.0)
    assert cp01["cost"] == pytest.approx(15 * 0.01 + 25.0)


def test_run_costs_count_only_sent_messages_of_the_first_run():
    costs = run_costs(_outbox(), AS_OF, COSTS).set_index(["customer_id", "campaign_id"])
    assert costs.loc[("T00", "CP_01"), "cost"] == pytest.approx(25.01)  # not the 10 March task
    assert costs.loc[("T29", "CP_01"), "cost"] == 0.0  # dead: never sent
    assert costs.loc[("K00", "CP_01"), "contacts"] == 0  # control: suppressed


def test_a_sent_channel_without_a_cost_is_an_error_naming_it():
    with pytest.raises(ValueError, match="csm_task"):
        run_costs(_outbox(), AS_OF, {"email": 0.01})


def test_spend_by_channel_counts_every_sent_message_planned_by_the_day():
    spend = spend_by_channel(_outbox(), AS_OF, COSTS).set_index("channel")
    # e-mails: 29 first + L00 + A0, A1 = 32; CSM tasks: T00, T01 steps + T00's second run = 3
    assert spend.loc["email", "sent"] == 32 and spend.loc["csm_task", "sent"] == 3
    assert spend.loc["csm_task", "cost"] == pytest.approx(75.0)
    assert list(spend.index) == list(COSTS)
    earlier = spend_by_channel(_outbox(), date(2026, 3, 20), COSTS).set_index("channel")
    assert earlier.loc["email", "sent"] == 31  # L00's is planned 25 March


def test_the_roi_table_has_its_columns(roi):
    assert list(roi.reset_index().columns) == list(ROI_COLUMNS)


def test_run_costs_cover_the_same_runs_as_the_campaign_effects_first_runs():
    # given the outbox, then run_costs' runs are first_runs' learners, campaigns and messages
    outbox = _outbox()
    runs = first_runs(outbox, AS_OF)
    costs = run_costs(outbox, AS_OF, COSTS)
    pairs = runs[["customer_id", "campaign_id"]].sort_values(["customer_id", "campaign_id"])
    assert costs[["customer_id", "campaign_id"]].values.tolist() == pairs.values.tolist()
    sent = runs.explode("message_ids").merge(outbox, left_on="message_ids", right_on="message_id")
    assert costs["contacts"].sum() == (sent["state"] == SENT).sum()
