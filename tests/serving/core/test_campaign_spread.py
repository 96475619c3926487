"""The planner and ``spread`` campaigns (``serving.core.campaigns``, ``rules.spread``): a
population tagged on one day gets a weekly digest spread over the week, each learner once a
week on their own day, instead of all of it on the first day and every seventh after it."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

import numpy as np
import pandas as pd

from tests.serving.core.test_campaigns import decision, features_of, plan

FIRST = date(2026, 3, 2)
LEARNERS = [f"L{number:04d}" for number in range(700)]


def _days_planned(ruleset, campaign_id: str, days: int) -> pd.DataFrame:
    """Plan ``days`` batch days for LEARNERS all deciding ``campaign_id``, each day against the
    messages the days before planned (in its cap window; all sent by the next day)."""
    window = ruleset.campaigns.get(campaign_id).frequency_cap.per_days
    decided = [decision(learner, campaign_id, to_tag="ST_001") for learner in LEARNERS]
    features = features_of(*LEARNERS)
    planned: list[pd.DataFrame] = []
    for offset in range(days):
        day = FIRST + timedelta(days=offset)
        earlier = pd.concat(planned) if planned else pd.DataFrame(columns=["customer_id"])
        in_cap = (
            earlier[earlier["planned_on"] > day - timedelta(days=window)] if planned else earlier
        )
        counts = in_cap.groupby("customer_id").size().rename("messages").reset_index()
        counts = counts.assign(campaign_id=campaign_id)
        messages = plan(decided, features, ruleset, in_window=counts, as_of=day).messages
        planned.append(messages[["customer_id", "planned_on"]])
    return pd.concat(planned, ignore_index=True)


def test_a_spread_weekly_digest_goes_to_each_learner_once_a_week_on_their_own_day(ruleset):
    # Given 700 learners in ST_001 from the first day on, whose default is the weekly digest
    assert ruleset.campaigns.get("CP_22").spread
    # When 21 batch days plan it
    planned = _days_planned(ruleset, "CP_22", 21)
    # Then each day sends about a seventh of them (100; 5 standard deviations: 45), not all
    per_day = (
        planned.groupby("planned_on")
        .size()
        .reindex([FIRST + timedelta(days=d) for d in range(21)], fill_value=0)
    )
    assert per_day.min() > 55 and per_day.max() < 145
    # And each learner gets one a week, exactly 7 days apart
    days = planned.groupby("customer_id")["planned_on"].apply(sorted)
    assert len(days) == len(LEARNERS) and (days.map(len) == 3).all()
    gaps = {(later - earlier).days for each in days for earlier, later in pairwise(each)}
    assert gaps == {7}


def test_a_campaign_that_is_not_spread_still_starts_everyone_on_the_first_day(ruleset):
    # Given the same learners deciding upgrade nurturing (not spread)
    assert not ruleset.campaigns.get("CP_09").spread
    # When the first day plans it, Then every learner is enrolled that day
    planned = _days_planned(ruleset, "CP_09", 1)
    assert set(planned["customer_id"]) == set(LEARNERS)
    assert np.all(planned["planned_on"] == FIRST)
