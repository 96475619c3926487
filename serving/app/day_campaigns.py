"""The campaign messages a batch day plans: the planner, given what the outbox already holds.

``plan_day_campaigns`` reads what the planner needs from the store (per learner and campaign:
whether messages are still pending, how many were planned in the campaign's cap window) and asks
the planner
(``serving.core.campaigns.plan_campaigns`` over the rules' catalogue, ``catalogue_planner``) for
the day's plan, which ``serving.app.batch`` then writes with the day (``StateStore.apply_day``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import pandas as pd

from rules import RuleSet
from rules.campaigns import Catalogue
from serving.core.assess import Assessment
from serving.core.campaigns import candidate_pairs, cap_windows, plan_campaigns
from serving.core.messages import CampaignPlan
from serving.infra.store import StateStore


class CampaignPlanner(Protocol):
    """Plans a day's campaign messages (``serving.core.campaigns.plan_campaigns`` with its
    catalogue bound): pure, given the day's decisions and features and the outbox's state.

    ``windows`` are the cap windows (campaign id -> days) whose ``in_window`` counts it reads;
    ``candidates`` the (customer_id, campaign_id) pairs of the day's decisions it may enrol
    given the pending ones, the only pairs whose counts the store reads for it.
    """

    windows: Mapping[str, int]

    def candidates(
        self, decisions: pd.DataFrame, pending: pd.DataFrame, as_of: date
    ) -> pd.DataFrame:
        """The pairs whose ``in_window`` counts the plan of ``decisions`` on ``as_of`` depends
        on."""
        ...

    def __call__(
        self,
        decisions: pd.DataFrame,
        features: pd.DataFrame,
        as_of: date,
        *,
        pending: pd.DataFrame,
        in_window: pd.DataFrame,
        candidates: pd.DataFrame | None = None,
    ) -> CampaignPlan:
        """The messages planned on ``as_of`` and the pending pairs to cancel (``candidates``:
        what ``candidates`` gave for these decisions, when the caller holds it)."""
        ...


@dataclass(frozen=True)
class CataloguePlanner:
    """``serving.core.campaigns.plan_campaigns`` over a campaign catalogue."""

    catalogue: Catalogue

    @property
    def windows(self) -> Mapping[str, int]:
        return cap_windows(self.catalogue)

    def candidates(
        self, decisions: pd.DataFrame, pending: pd.DataFrame, as_of: date
    ) -> pd.DataFrame:
        return candidate_pairs(decisions, pending, self.catalogue, as_of)

    def __call__(
        self,
        decisions: pd.DataFrame,
        features: pd.DataFrame,
        as_of: date,
        *,
        pending: pd.DataFrame,
        in_window: pd.DataFrame,
        candidates: pd.DataFrame | None = None,
    ) -> CampaignPlan:
        return plan_campaigns(
            decisions, features, self.catalogue, as_of,
            pending=pending, in_window=in_window, candidates=candidates,
        )  # fmt: skip


def catalogue_planner(ruleset: RuleSet) -> CampaignPlanner:
    """``serving.core.campaigns.plan_campaigns`` over the ruleset's campaign catalogue."""
    return CataloguePlanner(ruleset.campaigns)


def plan_day_campaigns(
    assessment: Assessment,
    store: StateStore,
    planner: CampaignPlanner | None,
    *,
    pending: pd.DataFrame | None = None,
) -> CampaignPlan | None:
    """The day's campaign plan, given, per learner and campaign, the messages still pending and
    those planned in the campaign's cap window; None without a planner.

    Pending pairs are read whole (the planner cancels those whose learner meets the exit; where
    the dispatcher keeps up they are a few days' unsent steps); window counts only for the
    planner's ``candidates``. Nearly every learner's decision names a campaign (the caps are
    what hold most back), so these are about one pair per learner without pending steps,
    against every pair with a message in any window, a number that grows with the windows.

    The day's own earlier messages are left out of both: a replaced day is planned against the
    outbox as it stood before that day (its unsent messages are dropped in the replacing
    transaction; its sent ones come back with the same ids and are not inserted twice).

    ``pending``: ``store.pending_pairs(as_of)`` when the caller read it already (the batch
    reads it while the day is decided: ``run_day``); None reads it here. Through the
    ``sqlite3`` driver that overlap lost (at 1M learners decide 3.44 -> 4.32 s, the plan only
    6.18 -> 5.86 s: each fetched row took the GIL back from the decide's pandas work); the read
    is the store's reader process's now (``serving.infra.arrow_reads``), which holds no GIL.
    """
    if planner is None:
        return None
    if pending is None:
        pending = store.pending_pairs(assessment.as_of)
    candidates = planner.candidates(assessment.decisions, pending, assessment.as_of)
    in_window = store.messages_in_window(assessment.as_of, planner.windows, candidates)
    return planner(
        assessment.decisions,
        assessment.features,
        assessment.as_of,
        pending=pending,
        in_window=in_window,
        candidates=candidates,
    )
