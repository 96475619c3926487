"""The six lifecycle KPIs of the product owner's brief, in data time.

``compute_kpis(transitions, scores, customers, as_of=..., outcomes=None, decisions=None)`` is pure
(``compute_kpis_on_days`` gives the same for many days at once, checking the frames once):
it reads the audit log (``StateStore.transitions_frame``), the stored scores
(``StateStore.scores_frame``), the customers table and, optionally, churn labels
(``features.labels``) and the batch's daily decision inputs (``serving.app.qualifying``), and uses
only what was known at ``as_of``. Every duration is counted in data days (the ``as_of`` of batch
days and transitions), never by the wall clock (``created_at``), so a backfill and a live daily
run give the same KPIs. Percentages are 0-100.

Each KPI, its id and target (``KPI_DEFINITIONS`` holds the one-line definitions that the CLI and
the report print under each):

``active_learner_rate`` (>= 70 %)
    Share of live learners (latest tag ST_001..ST_005) whose latest tag is ST_001 or ST_002.
``progression_velocity`` (<= 14 days)
    Median days from entering ST_001 to the first day of the uninterrupted run of days on which
    the learner met the condition of a rule from ST_001 into ST_002 and which ended in the move:
    when the learner qualified, not when the cooldown let the move happen.
``mastery_60d`` (>= 40 %)
    Of the learners whose first 60 days are all in the history (enrolled at most a day before
    the first logged day, at least 60 days before ``as_of``), the share whose first ST_003 came
    at most 60 days after enrolling. Without such a cohort: no value, and the day it becomes
    measurable.
``risk_detection_days`` (<= 1 day)
    Median days from the first day a learner met the condition of a rule into ST_004 (from their
    tag; the run of qualifying days ending at the move) to the automatic move. Moves whose run
    reaches a day without stored inputs (the history's first day, a missing snapshot) have an
    unknown start and are left out, counted in the detail.
``recovery_rate`` (>= 35 %)
    Of the risk episodes (entering ST_004/ST_005 until leaving both) that have ended, the share
    ending in ST_001/ST_002. ``treated`` and ``control`` split it by the ``control`` flag of the
    learner's score on the day the episode began (a learner unscored that day is in neither).
``automation_accuracy`` (>= 85 %)
    Of the automatic transitions at least 7 data days before ``as_of``, the share not reverted by
    a person within 7 data days and, for moves to ST_004 whose label window (``horizon_days``)
    is complete by the end of ``as_of``, confirmed by the label (churned = 1). Risk moves still
    inside their label window are judged on reverts only; the detail counts them.

A person "reverts" an automatic transition when the learner's next transition is manual and comes
within 7 days, unless it is the designed follow-up of a risk move (ST_004 -> ST_005 re-engagement
or ST_006). A KPI without data says so (``value`` None, e.g. "no ST_004 episodes yet") rather than
reporting 0; ``meets_target`` is None then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

from serving.app.kpi_model import Kpi, kpi_of, percent
from serving.app.kpi_runs import progression_velocity, risk_detection_days
from serving.app.qualifying import DecisionDays
from serving.core.tags import CHURNED_TAG, MANUAL_ONLY_TAG, RISK_TAG

ACTIVE_TAGS: tuple[str, ...] = ("ST_001", "ST_002")
RISK_TAGS: tuple[str, ...] = (RISK_TAG, MANUAL_ONLY_TAG)
MASTERY_TAG = "ST_003"
MASTERY_WINDOW = timedelta(days=60)
REVERT_WINDOW = timedelta(days=7)
DAY = timedelta(days=1)
LABEL_HORIZON_DAYS = 30
"""The churn window W of the labels (DESIGN §4), the default of ``features.labels``."""
RISK_FOLLOW_UPS: tuple[str, ...] = (MANUAL_ONLY_TAG, CHURNED_TAG)
"""Manual moves after an automatic ST_004 that agree with it (re-engagement, churn)."""
NO_HISTORY = "no history yet: no learner tagged"
SCORE_COLUMNS: tuple[str, ...] = ("customer_id", "as_of", "control")
"""The stored scores' columns the KPIs read (recovery's treated/control split)."""
TRANSITION_COLUMNS: tuple[str, ...] = (
    "id", "customer_id", "as_of", "from_tag", "to_tag", "rule_id", "actor",
)  # fmt: skip
"""The audit log's columns the KPIs read (not its texts: ``why`` and ``reason`` are half of a
million learners' log as pandas)."""


def _log_until(transitions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The transitions known at ``as_of`` in append order, with each learner's previous and next."""
    return coded_log_until(transitions, as_of)[0]


def coded_log_until(
    transitions: pd.DataFrame, as_of: pd.Timestamp
) -> tuple[pd.DataFrame, np.ndarray, pd.Index]:
    """``_log_until``, each of its rows' learner as a code (a position in the distinct ids) and
    those distinct ids, in the order they first come in the log.

    The log's learners are coded once, to group it; the caller keeps the codes for its own
    lookups instead of looking the ids up again (15.5M rows: grouping by the text ids, then
    finding each row's id among the learners' twice, cost ~12 s of the KPIs' ~22 s).
    """
    log = transitions[transitions["as_of"] <= as_of]
    if not log["id"].is_monotonic_increasing:  # the store reads its log in id order
        log = log.sort_values("id")
    log = log.reset_index(drop=True)
    codes, learners = pd.factorize(log["customer_id"])
    by_learner = log.groupby(codes, sort=False)
    log["previous_as_of"] = by_learner["as_of"].shift(1)
    log["previous_to_tag"] = by_learner["to_tag"].shift(1)
    log["previous_from_tag"] = by_learner["from_tag"].shift(1)
    for column in ("to_tag", "actor", "as_of"):
        log[f"next_{column}"] = by_learner[column].shift(-1)
    return log, codes, pd.Index(learners)


def active_learner_rate(log: pd.DataFrame) -> Kpi:
    """Share of live learners whose latest tag is ST_001 or ST_002."""
    latest = log.drop_duplicates("customer_id", keep="last")["to_tag"]
    live = latest[latest != CHURNED_TAG]
    return active_kpi(int(live.isin(ACTIVE_TAGS).sum()), len(live))


def active_kpi(active: int, live: int) -> Kpi:
    """The active learner rate of ``active`` learners in ST_001/ST_002 out of ``live`` ones."""
    detail = (
        f"{active} of {live} live learners in ST_001/ST_002" if live else "no live learners yet"
    )
    return kpi_of("active_learner_rate", percent(active, live), detail)


def mastery_within_60_days(log: pd.DataFrame, customers: pd.DataFrame, as_of: pd.Timestamp) -> Kpi:
    """Share of learners with 60 days of history who reached ST_003 within 60 days of enrolling.

    A learner enrolled on day e is first tagged on day e + 1 (eligible means enrolled before the
    day), so their first 60 days are in the history when e is at most one day before the first
    logged day. Learners enrolled earlier may have reached ST_003 before the history began.
    """
    if log.empty:
        return kpi_of("mastery_60d", None, NO_HISTORY)
    learners = mastery_learners(log, customers)
    return mastery_kpi(log["as_of"].min(), as_of, learners)


def mastery_learners(log: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """Each customer's ``enrolled_day`` and ``mastered_after`` (their first ST_003 in ``log``
    minus the enrolment day; NaT without one), one row per customer.

    Any later log gives the same verdicts on a day: a first ST_003 after that day is also more
    than 60 days after the enrolment of a learner enrolled 60+ days before it.
    """
    enrolled_day = customers["enrolled_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    first_mastery = (
        log[log["to_tag"] == MASTERY_TAG].groupby("customer_id")["as_of"].min().rename("mastery")
    )
    mastery = customers[["customer_id"]].join(first_mastery, on="customer_id")["mastery"]
    return pd.DataFrame({"enrolled_day": enrolled_day, "mastered_after": mastery - enrolled_day})


def mastery_kpi(history_start: pd.Timestamp, as_of: pd.Timestamp, learners: pd.DataFrame) -> Kpi:
    """Mastery within 60 days at ``as_of`` of ``mastery_learners``, the history beginning on
    ``history_start`` (the first logged day)."""
    covered = learners[learners["enrolled_day"] >= history_start - DAY]
    cohort = covered[covered["enrolled_day"] <= as_of - MASTERY_WINDOW]
    earliest = covered["enrolled_day"].min() if len(covered) else None
    reached = int((cohort["mastered_after"] <= MASTERY_WINDOW).sum())
    return mastery_verdict(history_start, len(cohort), reached, earliest)


def mastery_verdict(
    history_start: pd.Timestamp, cohort: int, reached: int, earliest: pd.Timestamp | None
) -> Kpi:
    """Mastery of ``reached`` of a ``cohort`` of learners, the earliest enrolment the history
    covers being ``earliest`` (None: no learner enrolled since it began)."""
    if not cohort:
        earliest = history_start - DAY if earliest is None else earliest
        ready = (earliest + MASTERY_WINDOW).date()
        return kpi_of(
            "mastery_60d",
            None,
            f"not enough history: measurable from {ready} (history starts {history_start.date()}; "
            "learners enrolled earlier may have reached ST_003 before it)",
        )
    detail = (
        f"{reached} of {cohort} learners enrolled since {(history_start - DAY).date()} and "
        "60+ days ago reached ST_003 within 60 days"
    )
    return kpi_of("mastery_60d", percent(reached, cohort), detail)


def risk_episodes(
    log: pd.DataFrame, scores: pd.DataFrame, learners: tuple[np.ndarray, np.ndarray] | None = None
) -> pd.DataFrame:
    """One row per risk episode: start day (``as_of``), the exit's day and tag (``ended_on``,
    ``to_tag``; null while open) and the ``control`` flag of the start day's score.

    ``learners``: each log row's and each score's learner as an integer code (one code per
    learner across both), when the caller has them (``kpi_days``): the episodes are then
    numbered and joined by the codes rather than by the text ids, which cost most of this on a
    long log (a year of a million learners' moves: 4M rows).
    """
    was_at_risk = log["from_tag"].isin(RISK_TAGS)
    is_at_risk = log["to_tag"].isin(RISK_TAGS)
    entering, leaving = ~was_at_risk & is_at_risk, was_at_risk & ~is_at_risk
    log_key, score_key = log["customer_id"], scores["customer_id"]
    if learners is not None:
        log_key = pd.Series(learners[0], index=log.index)
        score_key = pd.Series(learners[1], index=scores.index)
    starts = log.loc[entering, ["customer_id", "as_of"]].assign(key=log_key[entering])
    ends = log.loc[leaving, ["as_of", "to_tag"]].assign(key=log_key[leaving])
    ends = ends.rename(columns={"as_of": "ended_on"})
    # Entries and exits alternate per learner: the n-th exit closes the n-th episode.
    starts = starts.assign(episode=starts.groupby("key").cumcount())
    ends = ends.assign(episode=ends.groupby("key").cumcount())
    episodes = starts.merge(ends, on=["key", "episode"], how="left")
    flags = scores[["as_of", "control"]].assign(key=score_key)
    return episodes.merge(flags, on=["key", "as_of"], how="left").drop(columns="key")


def recovery_rate(log: pd.DataFrame, scores: pd.DataFrame) -> Kpi:
    """Share of ended ST_004/ST_005 episodes ending in ST_001/ST_002, treated and control."""
    return recovery_kpi(risk_episodes(log, scores), None)


def recovery_kpi(episodes: pd.DataFrame, as_of: pd.Timestamp | None) -> Kpi:
    """Recovery of ``risk_episodes`` begun by ``as_of``, those whose exit came later counted
    as open (None: every episode, as the log holding them says)."""
    ended_on = episodes["ended_on"]
    if as_of is not None:
        episodes = episodes[episodes["as_of"] <= as_of]
        ended_on = episodes["ended_on"].where(episodes["ended_on"] <= as_of)
    ended = episodes[ended_on.notna()]
    back = ended["to_tag"].isin(ACTIVE_TAGS)
    # A learner without a score that day has no known group: counted overall only.
    treated, control = ended["control"].eq(False), ended["control"].eq(True)
    counts = [len(ended), int(back.sum()), int(treated.sum()), int((back & treated).sum())]
    return recovery_verdict(len(episodes), *counts, int(control.sum()), int((back & control).sum()))


def recovery_verdict(
    episodes: int,
    ended: int,
    recovered: int,
    treated: int,
    treated_back: int,
    control: int,
    control_back: int,
) -> Kpi:
    """Recovery of ``recovered`` of ``ended`` of ``episodes`` risk episodes, ``treated_back``
    of the ``treated`` ones and ``control_back`` of the ``control`` group's."""
    if ended:
        detail = (
            f"{recovered} of {ended} ended ST_004/ST_005 episodes back in ST_001/ST_002 "
            f"({episodes - ended} still open); treated {treated_back}/{treated}, control "
            f"{control_back}/{control}"
        )
    elif episodes:
        detail = f"no ST_004/ST_005 episode has ended yet ({episodes} open)"
    else:
        detail = "no ST_004 episodes yet"
    return kpi_of(
        "recovery_rate",
        percent(recovered, ended),
        detail,
        treated=percent(treated_back, treated),
        control=percent(control_back, control),
    )


def _reverted(automatic: pd.DataFrame) -> pd.Series:
    """Whether a person's next move undid each automatic transition within 7 data days."""
    manual_next = automatic["next_actor"].notna()
    soon = automatic["next_as_of"] - automatic["as_of"] <= REVERT_WINDOW
    follow_up = (automatic["to_tag"] == RISK_TAG) & automatic["next_to_tag"].isin(RISK_FOLLOW_UPS)
    return manual_next & soon & ~follow_up


def complete_labels(
    outcomes: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int = LABEL_HORIZON_DAYS
) -> pd.DataFrame:
    """The labels whose window [t, t + horizon) ends by the end of ``as_of`` (known then)."""
    return outcomes[outcomes["as_of"] + timedelta(days=horizon_days) <= as_of + DAY]


def automation_accuracy(log: pd.DataFrame, as_of: pd.Timestamp, labels: pd.DataFrame | None) -> Kpi:
    """Share of automatic transitions neither reverted by a person nor refuted by the label.

    Args:
        log: the audit log up to ``as_of`` (``_log_until``).
        as_of: the KPI day.
        labels: complete labels known at ``as_of`` (``complete_labels``), or None when no event
            log was given: risk moves are then judged on reverts only.
    """
    automatic = automatic_moves(log)
    churned = None if labels is None else moves_churned(automatic, labels)
    return accuracy_kpi(automatic, as_of, churned)


def automatic_moves(log: pd.DataFrame) -> pd.DataFrame:
    """The automatic transitions of ``log`` (``_log_until``): ``customer_id``, ``as_of``,
    ``to_tag`` and ``reverted`` (``_reverted``)."""
    # only the columns read: a long log's every column taken for most of its rows cost seconds
    read = ["customer_id", "as_of", "to_tag", "next_actor", "next_as_of", "next_to_tag"]
    automatic = log.loc[log["rule_id"].notna(), read]
    return automatic[["customer_id", "as_of", "to_tag"]].assign(reverted=_reverted(automatic))


def moves_churned(automatic: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """Each automatic move's label (1.0 churned, 0.0 not, NaN without one), on its index."""
    keyed = automatic[["customer_id", "as_of"]].merge(
        labels[["customer_id", "as_of", "churned"]], on=["customer_id", "as_of"], how="left"
    )
    return pd.Series(keyed["churned"].to_numpy(dtype="float64"), index=automatic.index)


def accuracy_kpi(automatic: pd.DataFrame, as_of: pd.Timestamp, churned: pd.Series | None) -> Kpi:
    """Automation accuracy at ``as_of`` of ``automatic_moves`` (those up to ``as_of``).

    Args:
        automatic: ``automatic_moves`` of the log up to ``as_of``.
        as_of: the KPI day.
        churned: ``moves_churned`` of the labels complete at ``as_of``, or None without labels.
    """
    settled = automatic["as_of"] + REVERT_WINDOW <= as_of
    judged = automatic[settled]
    reverted = judged["reverted"]
    is_risk = judged["to_tag"] == RISK_TAG
    known = pd.Series(np.nan, index=judged.index) if churned is None else churned[settled]
    refuted = is_risk & known.eq(0)
    return accuracy_verdict(
        judged=len(judged), correct=int((~reverted & ~refuted).sum()),
        reverted=int(reverted.sum()), confirmed=int((is_risk & known.eq(1)).sum()),
        refuted=int(refuted.sum()), waiting=int((is_risk & known.isna()).sum()),
        younger=int((~settled).sum()), labelled=churned is not None,
    )  # fmt: skip


def accuracy_verdict(
    *,
    judged: int,
    correct: int,
    reverted: int,
    confirmed: int,
    refuted: int,
    waiting: int,
    younger: int,
    labelled: bool,
) -> Kpi:
    """Automation accuracy of ``correct`` of ``judged`` automatic transitions (``reverted``
    by a person; risk moves ``confirmed``, ``refuted`` or ``waiting`` for a complete label when
    ``labelled``); ``younger`` ones not judged yet."""
    if not judged:
        detail = f"no automatic transitions 7+ days old yet ({younger} younger)"
    else:
        against = (
            f"risk moves vs their complete label: {confirmed} confirmed, {refuted} refuted, "
            f"{waiting} without a complete label (judged on reverts only)"
            if labelled
            else "no labels given: risk moves judged on reverts only"
        )
        detail = (
            f"{correct} of {judged} automatic transitions held up: {reverted} reverted by a "
            f"person within 7 days; {against}; {younger} younger than 7 days not judged"
        )
    return kpi_of("automation_accuracy", percent(correct, judged), detail)


def compute_kpis(
    transitions: pd.DataFrame,
    scores: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    as_of: date,
    outcomes: pd.DataFrame | None = None,
    decisions: DecisionDays | None = None,
    horizon_days: int = LABEL_HORIZON_DAYS,
) -> list[Kpi]:
    """The six KPIs at ``as_of`` (the module docstring defines them): ``compute_kpis_on_days``
    of that one day (its arguments, with ``as_of`` the day the KPIs describe).

    Raises:
        ValueError: a frame breaks its contract (names the frame, column and values).
    """
    on_days = compute_kpis_on_days(
        transitions, scores, customers, days=[as_of], outcomes=outcomes, decisions=decisions,
        horizon_days=horizon_days,
    )  # fmt: skip
    return on_days[as_of]


def compute_kpis_on_days(
    transitions: pd.DataFrame,
    scores: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    days: Sequence[date],
    outcomes: pd.DataFrame | None = None,
    decisions: DecisionDays | None = None,
    horizon_days: int = LABEL_HORIZON_DAYS,
) -> dict[date, list[Kpi]]:
    """The six KPIs on each of ``days`` (00:00 UTC of each), each day's from what was known then.

    What does not depend on the day is found once (``serving.app.kpi_days``): the frames'
    checks, the moves, their runs of qualifying days, the risk episodes, the automatic moves and
    their labels; each day then keeps the rows known by its end.

    Args:
        transitions: the audit log (``TRANSITIONS_SCHEMA``), any period; later rows are ignored.
        scores: stored scores (``STORED_SCORES_SCHEMA``), at least the ``SCORE_COLUMNS``
            (others are ignored); their ``control`` flags split recovery.
        customers: the customers contract (``features.schemas.customers_schema``).
        days: the days the KPIs describe.
        outcomes: churn labels (``features.schemas.labels_schema``), e.g. ``compute_labels`` of
            the automatic ST_004 moves; on a day, only those complete by its end are used.
        decisions: the batch days' decision inputs; without them detection speed and
            progression velocity have no value.
        horizon_days: the labels' churn window W in days.

    Raises:
        ValueError: a frame breaks its contract (names the frame, column and values).
    """
    # kpi_days builds on this module's KPI functions: imported here, where both are loaded.
    from serving.app.kpi_days import kpi_history, kpis_on_days

    if not days:
        return {}
    history = kpi_history(
        transitions, scores, customers, until=max(days), outcomes=outcomes, decisions=decisions,
        horizon_days=horizon_days,
    )  # fmt: skip
    return kpis_on_days(history, days)


__all__ = [
    "ACTIVE_TAGS",
    "RISK_TAGS",
    "SCORE_COLUMNS",
    "TRANSITION_COLUMNS",
    "DecisionDays",
    "Kpi",
    "active_learner_rate",
    "automation_accuracy",
    "complete_labels",
    "compute_kpis",
    "compute_kpis_on_days",
    "mastery_within_60_days",
    "progression_velocity",
    "recovery_rate",
    "risk_detection_days",
]
