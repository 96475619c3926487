"""The measurement recovers the simulator's intervention effect, and finds none when it is off.

Given a simulated log, the learners at risk on a campaign day (active in the last 30 days, quiet
for the last 7, not cancelled) are split by the stable control hash (``control_flags``); the
treated get an email on that day and the simulator's effect is applied to them; then
``campaign_effect`` measures the uplift from the outbox rows and the log alone.

The true effect (``features.simulator.InterventionEffect``): a learner converts in the window
without any contact with the base log's outcome ``c_i``; a contact adds a re-engagement inside
the window with probability ``effect * responsive_i * reachable_i``. So the expected uplift of the
random split is ``effect * mean(responsive_i * reachable_i * (1 - c_i))`` over every learner at
risk, both arms (what the treated would gain, averaged over the population the arms are drawn
from).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from features.simulator import (
    InterventionEffect,
    SimulationConfig,
    apply_contacts,
    contact_outcomes,
    simulate_chunk,
)
from rules.interventions import control_flags
from serving.app.campaign_effect import EffectSettings, campaign_effect, learner_outcomes
from serving.core.messages import SENT, SUPPRESSED, message_key

CONFIG = SimulationConfig(customers=8000, days=120, seed=0, truth_share=0.0)
CAMPAIGN_DAY = CONFIG.start + timedelta(days=95)
AS_OF = CONFIG.end - timedelta(days=1)  # the log's last day: every 14-day window is complete
CAMPAIGN = "CP_04"
NO_FEEDBACK = pd.DataFrame(columns=["message_id", "kind", "recorded_at"])


@pytest.fixture(scope="module")
def world():
    """The base log, the at-risk learners and their outbox rows (control suppressed)."""
    seed = np.random.SeedSequence(CONFIG.seed).spawn(1)[0]
    events = simulate_chunk(CONFIG, seed, 0, CONFIG.customers).events
    frame = events.to_pandas()
    ids = _at_risk(frame, CAMPAIGN_DAY)
    control = control_flags(ids, np.zeros(len(ids), dtype=int), [CAMPAIGN], 0.5)
    rows = [_message(customer, bool(k)) for customer, k in zip(ids, control, strict=True)]
    outbox = pd.DataFrame(rows)
    return events, frame, outbox


def _at_risk(events: pd.DataFrame, day: date) -> np.ndarray:
    days = (events.ts.dt.tz_localize(None).dt.floor("D") - pd.Timestamp(day)).dt.days
    recent = set(events.customer_id[days.between(-30, -1)])
    quiet = set(events.customer_id[days.between(-7, -1)])
    gone = set(events.customer_id[(events.event_type == "subscription_cancelled") & (days < 0)])
    return np.array(sorted(recent - quiet - gone))


def _message(customer: str, control: bool) -> dict:
    return {
        "message_id": message_key(CAMPAIGN_DAY, customer, CAMPAIGN, 0),
        "planned_on": CAMPAIGN_DAY,
        "due_on": CAMPAIGN_DAY,
        "customer_id": customer,
        "campaign_id": CAMPAIGN,
        "step": 0,
        "channel": "email",
        "template_id": "win_back_email",
        "variant": "",
        "control": control,
        "context": "{}",
        "state": SUPPRESSED if control else SENT,
    }


def _measure(world, effect: InterventionEffect) -> tuple[dict, float]:
    """The measured effect row after contacting the treated, and the true expected uplift."""
    events, frame, outbox = world
    treated = outbox[~outbox.control]
    contacts = pd.DataFrame(
        {"customer_id": treated.customer_id, "day": treated.due_on, "channel": treated.channel}
    )
    contacted, _ = apply_contacts(events, contacts, effect, CONFIG.end)
    table = campaign_effect(outbox, NO_FEEDBACK, contacted.to_pandas(), as_of=AS_OF)
    # The truth: every at-risk learner's base conversion and whether a contact could move them.
    base = learner_outcomes(outbox, NO_FEEDBACK, frame, as_of=AS_OF).set_index("customer_id")
    everyone = pd.DataFrame(
        {"customer_id": outbox.customer_id, "day": CAMPAIGN_DAY, "channel": "email"}
    )
    could = contact_outcomes(everyone, events, effect, CONFIG.end)
    movable = could.responsive & could.reachable
    unconverted = ~base.loc[could.customer_id, "log_converted"].to_numpy()
    true_uplift = effect.effect * float(np.mean(movable.to_numpy() & unconverted))
    return table.iloc[0].to_dict(), true_uplift


def test_the_measured_uplift_recovers_the_simulated_effect(world):
    # given the effect switched on: half the email-responsive, reachable learners come back
    row, true_uplift = _measure(world, InterventionEffect(effect=0.5))
    # then the 95% interval contains the true uplift and excludes 0; the sample can tell
    assert row["treated"] > 400 and row["suppressed"] > 400 and row["pending"] == 0
    assert true_uplift > 0.1
    assert row["ci_low"] <= true_uplift <= row["ci_high"]
    assert row["ci_low"] > 0 and row["p_value"] < 0.05
    assert row["enough"] == (row["mde"] <= EffectSettings().min_effect)


def test_no_uplift_is_found_when_the_effect_is_off(world):
    # given the same campaign with the effect switched off
    row, true_uplift = _measure(world, InterventionEffect(effect=0.0))
    # then the true uplift is 0 and the 95% interval contains it
    assert true_uplift == 0.0
    assert row["ci_low"] <= 0.0 <= row["ci_high"]
    assert row["p_value"] > 0.05
