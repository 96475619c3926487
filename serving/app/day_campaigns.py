"""The campaign messages a batch day plans: the planner, given what the outbox already holds.

``plan_day_campaigns`` reads what the planner needs from the store (the day's learners' pending
messages, the messages planned in the last ``RECENT_MESSAGE_DAYS``) and asks the planner
(``serving.core.campaigns.plan_campaigns`` over the rules' catalogue, ``catalogue_planner``) for
the day's plan, which ``serving.app.batch`` then writes with the day (``StateStore.apply_day``).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Protocol

import pandas as pd

from rules import RuleSet
from serving.core.assess import Assessment
from serving.core.messages import CampaignPlan
from serving.infra.store import StateStore

RECENT_MESSAGE_DAYS = 60
"""How far back the campaign planner sees the messages already planned (its caps, cadences)."""


class CampaignPlanner(Protocol):
    """Plans a day's campaign messages (``serving.core.campaigns.plan_campaigns`` with its
    catalogue bound): pure, given the day's decisions and features and the outbox's state."""

    def __call__(
        self,
        decisions: pd.DataFrame,
        features: pd.DataFrame,
        as_of: date,
        *,
        pending: pd.DataFrame,
        recent: pd.DataFrame,
    ) -> CampaignPlan:
        """The messages planned on ``as_of`` and the ids of pending ones to cancel."""
        ...


def catalogue_planner(ruleset: RuleSet) -> CampaignPlanner:
    """``serving.core.campaigns.plan_campaigns`` over the ruleset's campaign catalogue."""
    from serving.core.campaigns import plan_campaigns

    def planner(
        decisions: pd.DataFrame,
        features: pd.DataFrame,
        as_of: date,
        *,
        pending: pd.DataFrame,
        recent: pd.DataFrame,
    ) -> CampaignPlan:
        return plan_campaigns(
            decisions, features, ruleset.campaigns, as_of, pending=pending, recent=recent
        )

    return planner


def plan_day_campaigns(
    assessment: Assessment, store: StateStore, planner: CampaignPlanner | None
) -> CampaignPlan | None:
    """The day's campaign plan, given the messages still pending for its learners and those
    planned in the last ``RECENT_MESSAGE_DAYS``; None without a planner.

    The day's own earlier messages are left out of both: a replaced day is planned against the
    outbox as it stood before that day (its unsent messages are dropped in the replacing
    transaction; its sent ones come back with the same ids and are not inserted twice).
    """
    if planner is None:
        return None
    decisions, day = assessment.decisions, pd.Timestamp(assessment.as_of)
    pending = store.pending_messages(decisions["customer_id"].tolist())
    recent = store.recent_messages(assessment.as_of - timedelta(days=RECENT_MESSAGE_DAYS))
    pending = pending[pending["planned_on"] != day].reset_index(drop=True)
    recent = recent[recent["planned_on"] != day].reset_index(drop=True)
    return planner(decisions, assessment.features, assessment.as_of, pending=pending, recent=recent)


__all__ = ["RECENT_MESSAGE_DAYS", "CampaignPlanner", "catalogue_planner", "plan_day_campaigns"]
