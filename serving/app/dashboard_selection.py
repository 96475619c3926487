"""The learners a dashboard filter selects, as a mask over everyone, from what a history keeps.

``everyone_at`` is every learner's tier, cohort and tag at the end of a day, found once per day
(the unfiltered pages find it at the latest day); a tier, cohort or tag filter masks it
(``narrowing``). What a first filter still paid on its own, at a million learners, is found
once per history here instead, so that a filter is numpy masks:

- a behaviour filter split every latest score's ``behaviour_tags`` and semi-joined them to the
  learners (~0.5 s of CPU): ``behaviour_rows`` factorises the column once
  (``rules.behaviours.BehaviourLookup``) and finds each score's row in everyone once;
  ``holders`` then answers a behaviour on the distinct tag sets and scatters it;
- the KPIs of the selection looked a third of a million ids up in the KPI history's million
  (~0.3 s): ``kpi_positions`` finds everyone's position there once, and a selection narrows
  the history by those positions (``KpiHistory.of_positions``).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from rules.behaviours import BehaviourLookup
from serving.app.dashboard import DashboardCache, DashboardFrames
from serving.app.dashboard_cohorts import check_held
from serving.app.dashboard_data import DashboardFilters, latest_tags, learners_of, narrowing
from serving.core.frames import positions_in


def everyone_at(frames: DashboardFrames, end: date) -> pd.DataFrame:
    """Every learner's tier, cohort and tag at the end of ``end`` (``learners_of`` everyone),
    found once per end day and kept with the frames: a filter then only masks it
    (``narrow_learners``). The unfiltered overview finds it at the latest day."""
    return frames.remembered(
        ("everyone", end),
        lambda: learners_of(
            frames.customers, latest_tags(frames.transitions, end), DashboardFilters()
        ),
    )


def selected(frames: DashboardFrames, filters: DashboardFilters, end: date) -> np.ndarray:
    """Whether the tier, cohort, tag and behaviour filters select each row of
    ``everyone_at(frames, end)``, kept per filter.

    Raises:
        ValueError: a behaviour tag no learner holds on the latest batch day.
    """
    key = ("selected", filters.tier, filters.cohort, filters.tag, filters.behaviour, end)
    return frames.remembered(key, lambda: _selection(frames, filters, end))


def _selection(frames: DashboardFrames, filters: DashboardFilters, end: date) -> np.ndarray:
    keep = narrowing(everyone_at(frames, end), filters)
    if filters.behaviour is not None:
        keep &= holding(frames, end, filters.behaviour)
    return keep


def holding(frames: DashboardFrames, end: date, behaviour: str) -> np.ndarray:
    """Whether each row of ``everyone_at(frames, end)`` holds ``behaviour`` in the latest
    scores (``with_behaviour``'s learners, as a mask).

    Raises:
        ValueError: no learner holds ``behaviour`` (naming the tags held).
    """
    check_held(frames, behaviour)
    lookup, rows = behaviour_rows_at(frames, end)
    return holders(lookup, rows, len(everyone_at(frames, end)), behaviour)


def behaviour_rows_at(frames: DashboardFrames, end: date) -> tuple[BehaviourLookup, np.ndarray]:
    """``behaviour_rows`` of the latest scores and everyone at ``end``, once per history."""
    return frames.remembered(
        ("behaviour-rows", end),
        lambda: behaviour_rows(frames.latest_scores, everyone_at(frames, end)),
    )


def behaviour_rows(
    scores: pd.DataFrame, learners: pd.DataFrame
) -> tuple[BehaviourLookup, np.ndarray]:
    """The scores' ``behaviour_tags`` factorised, and each score's row in ``learners`` (-1: none).

    Args:
        scores: a day's scores (``customer_id``, ``behaviour_tags``).
        learners: the learners a mask is asked over (``customer_id``).
    """
    rows = positions_in(scores["customer_id"], learners["customer_id"])
    return BehaviourLookup(scores["behaviour_tags"]), rows


def holders(lookup: BehaviourLookup, rows: np.ndarray, size: int, behaviour: str) -> np.ndarray:
    """Whether each of ``size`` learners has a score holding ``behaviour`` (``behaviour_rows``'
    ``lookup`` and ``rows``): ``holding_behaviour``'s semi-join, as a mask."""
    holds = lookup.holds(behaviour) & (rows >= 0)
    mask = np.zeros(size, dtype=bool)
    mask[rows[holds]] = True
    return mask


def kpi_positions(cache: DashboardCache, frames: DashboardFrames, end: date) -> np.ndarray:
    """Each row of ``everyone_at(frames, end)``'s position in the KPI history's ids, once per
    end day: a selection's KPIs then narrow the history by a mask (``kpi_trend``)."""
    return frames.remembered(
        ("kpi-positions", end),
        lambda: cache.kpi_history(frames).positions_of(everyone_at(frames, end)["customer_id"]),
    )


def prime(cache: DashboardCache, frames: DashboardFrames) -> None:
    """Find, at the latest day, what a first filter reads (the unfiltered overview calls it,
    warmed): everyone's KPI positions and the behaviour lookup."""
    latest = frames.latest_day
    kpi_positions(cache, frames, latest)
    if "behaviour_tags" in frames.latest_scores:
        behaviour_rows_at(frames, latest)


__all__ = [
    "behaviour_rows",
    "behaviour_rows_at",
    "everyone_at",
    "holders",
    "holding",
    "kpi_positions",
    "prime",
    "selected",
]
