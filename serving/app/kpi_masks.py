"""Each KPI on many days from the frames ``serving.app.kpi_days`` found once: numpy masks.

A day keeps the rows known by its end (a move made, an episode begun or ended, a label whose
window is complete by then) and counts them; the counts go to the same verdicts (``*_verdict``)
that a single day's KPI functions end in, so the values and the words are theirs. Every
function takes its frame and the days (naive midnights, oldest first) and returns one KPI per
day; nothing here loops over learners, only over the days.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from serving.app.kpi_model import Kpi, kpi_of
from serving.app.kpi_runs import (
    detection_kpi,
    detection_verdict,
    progression_kpi,
    progression_verdict,
)
from serving.app.kpis import (
    ACTIVE_TAGS,
    DAY,
    MASTERY_WINDOW,
    NO_HISTORY,
    REVERT_WINDOW,
    accuracy_verdict,
    mastery_verdict,
    recovery_verdict,
)
from serving.app.qualifying import MEASURED, DecisionDays
from serving.core.tags import CHURNED_TAG, RISK_TAG

DAY_UNIT = "datetime64[us]"


def _stamps(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=DAY_UNIT)


def _days(days: list[pd.Timestamp]) -> np.ndarray:
    return np.array(days, dtype=DAY_UNIT)


def _count_by_day(stamps: np.ndarray, days: np.ndarray) -> np.ndarray:
    """How many of ``stamps`` (NaT never) fall on or before each of ``days``."""
    return np.searchsorted(np.sort(stamps[~np.isnat(stamps)]), days, side="right")


def active_counts(log: pd.DataFrame, days: list[pd.Timestamp]) -> list[tuple[int, int]]:
    """(active, live) learners at the end of each day: a transition holds its learner's tag
    from its day until the day of their next one (``next_as_of``) or for good."""
    opened, closed = _stamps(log, "as_of"), _stamps(log, "next_as_of")
    tags = log["to_tag"].astype(object).to_numpy()
    wanted = _days(days)

    def holding(rows: np.ndarray) -> np.ndarray:
        return _count_by_day(opened[rows], wanted) - _count_by_day(closed[rows], wanted)

    live = holding(tags != CHURNED_TAG)
    active = holding(np.isin(tags, ACTIVE_TAGS))
    return [(int(a), int(b)) for a, b in zip(active, live, strict=True)]


def mastery_on_days(
    learners: pd.DataFrame, start: pd.Timestamp | None, days: list[pd.Timestamp]
) -> list[Kpi]:
    """Mastery within 60 days on each day, the history beginning on ``start`` (None: empty).

    The learners the history covers (enrolled since the day before it began) do not depend on
    the day; the cohort on a day is those enrolled 60+ days before it.
    """
    if start is None:
        return [kpi_of("mastery_60d", None, NO_HISTORY) for _ in days]
    enrolled = _stamps(learners, "enrolled_day")
    covered = enrolled >= np.datetime64(start - DAY)
    within = learners["mastered_after"].to_numpy(dtype="timedelta64[us]")
    within = within <= np.timedelta64(MASTERY_WINDOW)
    earliest = pd.Timestamp(enrolled[covered].min()) if covered.any() else None
    last_enrolled = _days([day - MASTERY_WINDOW for day in days])
    cohorts = _count_by_day(enrolled[covered], last_enrolled)
    reached = _count_by_day(enrolled[covered & within], last_enrolled)
    return [
        kpi_of("mastery_60d", None, NO_HISTORY)
        if day < start
        else mastery_verdict(start, int(cohort), int(hits), earliest)
        for day, cohort, hits in zip(days, cohorts, reached, strict=True)
    ]


def runs_on_days(
    moves: pd.DataFrame,
    days: list[pd.Timestamp],
    decisions: DecisionDays | None,
    target: str,
) -> list[Kpi]:
    """Progression velocity (``target`` ST_002) or detection speed (ST_004) on each day, of
    the moves made by then, each with its run status (``RUN_COLUMNS``)."""
    made = _stamps(moves, "as_of")
    wanted = _days(days)
    known = _count_by_day(made, wanted)
    kpi: Callable[..., Kpi] = progression_kpi if target == "ST_002" else detection_kpi
    if decisions is None:
        return [kpi(int(count), None, None) for count in known]
    statuses = moves["status"].astype("category")
    codes, names = statuses.cat.codes.to_numpy(), [str(name) for name in statuses.cat.categories]
    measured = moves[(statuses == MEASURED).to_numpy()]
    if target == "ST_002":
        spans = [
            measured["first_day"] - measured["entered"],
            measured["as_of"] - measured["entered"],
        ]
    else:
        spans = [measured["as_of"] - measured["first_day"]]
    spans = [span.dt.days.to_numpy() for span in spans]
    measured_on = _stamps(measured, "as_of")
    verdicts = []
    for day, count in zip(wanted, known, strict=True):
        if not count:
            verdicts.append(kpi(0, None, decisions))
            continue
        tally = np.bincount(codes[made <= day], minlength=len(names))
        counts = {name: int(tally[position]) for position, name in enumerate(names)}
        kept = [span[measured_on <= day] for span in spans]
        if target == "ST_002":
            verdicts.append(progression_verdict(kept[0], kept[1], counts, decisions))
        else:
            verdicts.append(detection_verdict(kept[0], counts, decisions))
    return verdicts


def recovery_on_days(episodes: pd.DataFrame, days: list[pd.Timestamp]) -> list[Kpi]:
    """Recovery on each day, of the risk episodes begun by then (ended if their exit was)."""
    began, ended_on = _stamps(episodes, "as_of"), _stamps(episodes, "ended_on")
    back = episodes["to_tag"].isin(ACTIVE_TAGS).to_numpy()
    treated = episodes["control"].eq(False).to_numpy()
    control = episodes["control"].eq(True).to_numpy()
    verdicts = []
    for day in _days(days):
        ended = (began <= day) & (ended_on <= day)
        verdicts.append(
            recovery_verdict(
                int((began <= day).sum()),
                int(ended.sum()),
                int((ended & back).sum()),
                int((ended & treated).sum()),
                int((ended & treated & back).sum()),
                int((ended & control).sum()),
                int((ended & control & back).sum()),
            )
        )
    return verdicts


def accuracy_on_days(
    automatic: pd.DataFrame,
    churned: pd.Series | None,
    days: list[pd.Timestamp],
    horizon_days: int,
) -> list[Kpi]:
    """Automation accuracy on each day of the automatic moves made by then; a move's label
    (``churned``, None: no labels) counts once its window [t, t + W) ends by the day's end."""
    made = _stamps(automatic, "as_of")
    is_risk = (automatic["to_tag"] == RISK_TAG).to_numpy()
    reverted = automatic["reverted"].to_numpy(dtype=bool)
    label = np.full(len(automatic), np.nan) if churned is None else churned.to_numpy(float)
    labelled_from = made + np.timedelta64(horizon_days, "D") - np.timedelta64(1, "D")
    verdicts = []
    for day in _days(days):
        known = made <= day
        judged = known & (made + np.timedelta64(REVERT_WINDOW) <= day)
        churn = np.where(labelled_from <= day, label, np.nan)
        risky = judged & is_risk
        refuted = risky & (churn == 0)
        verdicts.append(
            accuracy_verdict(
                judged=int(judged.sum()),
                correct=int((judged & ~reverted & ~refuted).sum()),
                reverted=int((judged & reverted).sum()),
                confirmed=int((risky & (churn == 1)).sum()),
                refuted=int(refuted.sum()),
                waiting=int((risky & np.isnan(churn)).sum()),
                younger=int((known & ~judged).sum()),
                labelled=churned is not None,
            )
        )
    return verdicts


__all__ = [
    "accuracy_on_days",
    "active_counts",
    "mastery_on_days",
    "recovery_on_days",
    "runs_on_days",
]
