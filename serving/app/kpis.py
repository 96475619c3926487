"""The six lifecycle KPIs of the product owner's brief, computed from the state store's frames.

``compute_kpis(transitions, scores, customers, as_of=..., outcomes=None)`` is pure: it reads the
audit log (``StateStore.transitions_frame``), the stored scores (``StateStore.scores_frame``), the
customers table and, optionally, churn labels, and uses only what was known at ``as_of``
(transitions and scores with ``as_of <= as_of``). Percentages are 0-100.

Each KPI, its id and target:

``active_learner_rate`` (>= 70 %)
    Share of live learners (latest tag ST_001..ST_005) whose latest tag is ST_001 or ST_002.
``progression_velocity`` (<= 14 days)
    Median days from entering ST_001 to the move ST_001 -> ST_002.
``mastery_60d`` (>= 40 %)
    Of the learners enrolled at least 60 days before ``as_of``, the share whose first ST_003
    came at most 60 days after the day they enrolled.
``risk_detection_hours`` (<= 24 hours)
    Median hours from the first risk signal to the automatic ST_004 transition. The signal is
    dated by the decision that fired it: 00:00 UTC of the transition's ``as_of`` (the data it saw
    ended then); the transition by its ``created_at``. So this measures how soon after its data
    closes the daily batch acts. Moves recorded more than 7 days after their data closed were
    replayed by a backfill and are left out (counted in the detail).
``recovery_rate`` (>= 35 %)
    Of the risk episodes (entering ST_004/ST_005 until leaving both) that have ended, the share
    ending in ST_001/ST_002. ``treated`` and ``control`` split it by the ``control`` flag of the
    learner's score on the day the episode began (a learner unscored that day is in neither).
``automation_accuracy`` (>= 85 %)
    Of the automatic transitions at least 7 days old, the share not reverted by a person within
    7 days and, for moves to ST_004 with a label at their ``as_of`` in ``outcomes``, confirmed by
    it (churned = 1). Younger transitions are not judged yet; unlabelled risk moves are judged
    on reverts only. The detail line counts both.

A person "reverts" an automatic transition when the learner's next transition is manual and comes
within 7 days, unless it is the designed follow-up of a risk move (ST_004 -> ST_005 re-engagement
or ST_006). A KPI without data says so (``value`` None, e.g. "no ST_004 episodes yet") rather than
reporting 0; ``meets_target`` is None then.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from features.schemas import customers_schema, labels_schema
from serving.core.frames import STORED_SCORES_SCHEMA, TRANSITIONS_SCHEMA, validate_frame
from serving.core.tags import CHURNED_TAG, MANUAL_ONLY_TAG, RISK_TAG

ACTIVE_TAGS: tuple[str, ...] = ("ST_001", "ST_002")
RISK_TAGS: tuple[str, ...] = (RISK_TAG, MANUAL_ONLY_TAG)
MASTERY_TAG = "ST_003"
MASTERY_WINDOW = timedelta(days=60)
REVERT_WINDOW = timedelta(days=7)
REPLAY_AFTER = timedelta(days=7)
"""A move recorded this long after its data closed was replayed by a backfill, not run live."""
RISK_FOLLOW_UPS: tuple[str, ...] = (MANUAL_ONLY_TAG, CHURNED_TAG)
"""Manual moves after an automatic ST_004 that agree with it (re-engagement, churn)."""


class Kpi(BaseModel):
    """One KPI at ``as_of``: its value against the target, and how it was obtained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    value: float | None
    target: float
    comparison: Literal[">=", "<="]
    unit: str
    meets_target: bool | None
    detail: str
    treated: float | None = None
    control: float | None = None


KPI_TARGETS: dict[str, tuple[str, Literal[">=", "<="], float, str]] = {
    "active_learner_rate": ("Active learner rate", ">=", 70.0, "%"),
    "progression_velocity": ("Progression velocity", "<=", 14.0, "days"),
    "mastery_60d": ("Mastery within 60 days", ">=", 40.0, "%"),
    "risk_detection_hours": ("At-risk detection speed", "<=", 24.0, "hours"),
    "recovery_rate": ("Recovery success rate", ">=", 35.0, "%"),
    "automation_accuracy": ("Automation accuracy", ">=", 85.0, "%"),
}
"""id -> (name, comparison, target, unit), in report order."""


def _kpi(kpi_id: str, value: float | None, detail: str, **split: float | None) -> Kpi:
    name, comparison, target, unit = KPI_TARGETS[kpi_id]
    meets: bool | None = None  # no value, no verdict
    if value is not None:
        meets = value >= target if comparison == ">=" else value <= target
    return Kpi(
        id=kpi_id,
        name=name,
        value=value,
        target=target,
        comparison=comparison,
        unit=unit,
        meets_target=meets,
        detail=detail,
        **split,
    )


def _percent(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def _instant(day: pd.Series) -> pd.Series:
    """00:00 UTC of each day."""
    return day.dt.tz_localize("UTC")


def _log_until(transitions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The transitions known at ``as_of`` in append order, with each learner's previous and next."""
    log = transitions[transitions["as_of"] <= as_of].sort_values("id").reset_index(drop=True)
    by_learner = log.groupby("customer_id", sort=False)
    log["previous_as_of"] = by_learner["as_of"].shift(1)
    log["previous_to_tag"] = by_learner["to_tag"].shift(1)
    for column in ("to_tag", "actor", "created_at"):
        log[f"next_{column}"] = by_learner[column].shift(-1)
    return log


def active_learner_rate(log: pd.DataFrame) -> Kpi:
    """Share of live learners whose latest tag is ST_001 or ST_002."""
    latest = log.drop_duplicates("customer_id", keep="last")["to_tag"]
    live = latest[latest != CHURNED_TAG]
    active = int(live.isin(ACTIVE_TAGS).sum())
    detail = (
        f"{active} of {len(live)} live learners in ST_001/ST_002"
        if len(live)
        else "no live learners yet"
    )
    return _kpi(
        "active_learner_rate",
        _percent(active, len(live)),
        detail,
    )


def progression_velocity(log: pd.DataFrame) -> Kpi:
    """Median days spent in ST_001 before moving on to ST_002."""
    moves = log[
        (log["from_tag"] == "ST_001")
        & (log["to_tag"] == "ST_002")
        & (log["previous_to_tag"] == "ST_001")
    ]
    days = (moves["as_of"] - moves["previous_as_of"]).dt.days
    value = float(days.median()) if len(days) else None
    detail = (
        f"median of {len(days)} ST_001 -> ST_002 moves (range {days.min()}-{days.max()} days)"
        if len(days)
        else "no ST_001 -> ST_002 moves yet"
    )
    return _kpi("progression_velocity", value, detail)


def mastery_within_60_days(log: pd.DataFrame, customers: pd.DataFrame, as_of: pd.Timestamp) -> Kpi:
    """Share of learners enrolled 60+ days ago who reached ST_003 within 60 days of enrolling."""
    enrolled_day = customers["enrolled_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    cohort = customers.assign(enrolled_day=enrolled_day)
    cohort = cohort[cohort["enrolled_day"] <= as_of - MASTERY_WINDOW]
    first_mastery = (
        log[log["to_tag"] == MASTERY_TAG].groupby("customer_id")["as_of"].min().rename("mastery")
    )
    cohort = cohort.join(first_mastery, on="customer_id")
    reached = int((cohort["mastery"] - cohort["enrolled_day"] <= MASTERY_WINDOW).sum())
    detail = (
        f"{reached} of {len(cohort)} learners enrolled 60+ days ago reached ST_003 within 60 days"
        if len(cohort)
        else "no learners enrolled 60+ days ago yet"
    )
    return _kpi(
        "mastery_60d",
        _percent(reached, len(cohort)),
        detail,
    )


def risk_detection_hours(log: pd.DataFrame) -> Kpi:
    """Median hours from the risk signal (00:00 UTC of the decision day) to the ST_004 move.

    Moves recorded more than ``REPLAY_AFTER`` after their data closed come from a backfill that
    replays history; they say nothing about how fast the daily job acts, so they are left out and
    counted in the detail.
    """
    moves = log[(log["to_tag"] == RISK_TAG) & log["rule_id"].notna()]
    hours = (moves["created_at"] - _instant(moves["as_of"])).dt.total_seconds() / 3600.0
    replayed = int((hours > REPLAY_AFTER.total_seconds() / 3600.0).sum())
    live = hours[hours <= REPLAY_AFTER.total_seconds() / 3600.0]
    value = float(live.median()) if len(live) else None
    if len(live):
        detail = f"median of {len(live)} automatic ST_004 moves (slowest {live.max():.1f} h)"
    elif replayed:
        detail = "every ST_004 move so far came from a backfill, not a live daily run"
    else:
        detail = "no automatic ST_004 moves yet"
    if replayed and len(live):
        detail += f"; {replayed} backfilled moves left out"
    return _kpi("risk_detection_hours", value, detail)


def _risk_episodes(log: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per risk episode: start day, ``ended``, ``recovered`` and the ``control`` flag."""
    was_at_risk = log["from_tag"].isin(RISK_TAGS)
    is_at_risk = log["to_tag"].isin(RISK_TAGS)
    starts = log.loc[~was_at_risk & is_at_risk, ["customer_id", "as_of"]]
    ends = log.loc[was_at_risk & ~is_at_risk, ["customer_id", "to_tag"]]
    # Entries and exits alternate per learner: the n-th exit closes the n-th episode.
    starts = starts.assign(episode=starts.groupby("customer_id").cumcount())
    ends = ends.assign(episode=ends.groupby("customer_id").cumcount())
    episodes = starts.merge(ends, on=["customer_id", "episode"], how="left")
    episodes["ended"] = episodes["to_tag"].notna()
    episodes["recovered"] = episodes["to_tag"].isin(ACTIVE_TAGS)
    flags = scores[["customer_id", "as_of", "control"]]
    return episodes.merge(flags, on=["customer_id", "as_of"], how="left")


def recovery_rate(log: pd.DataFrame, scores: pd.DataFrame) -> Kpi:
    """Share of ended ST_004/ST_005 episodes ending in ST_001/ST_002, treated and control."""
    episodes = _risk_episodes(log, scores)
    ended = episodes[episodes["ended"]]
    recovered = int(ended["recovered"].sum())
    # A learner without a score that day has no known group: counted overall only.
    treated = ended[ended["control"].eq(False)]
    control = ended[ended["control"].eq(True)]
    if len(ended):
        detail = (
            f"{recovered} of {len(ended)} ended ST_004/ST_005 episodes back in ST_001/ST_002 "
            f"({len(episodes) - len(ended)} still open); treated "
            f"{int(treated['recovered'].sum())}/{len(treated)}, control "
            f"{int(control['recovered'].sum())}/{len(control)}"
        )
    elif len(episodes):
        detail = f"no ST_004/ST_005 episode has ended yet ({len(episodes)} open)"
    else:
        detail = "no ST_004 episodes yet"
    return _kpi(
        "recovery_rate",
        _percent(recovered, len(ended)),
        detail,
        treated=_percent(int(treated["recovered"].sum()), len(treated)),
        control=_percent(int(control["recovered"].sum()), len(control)),
    )


def _reverted(automatic: pd.DataFrame) -> pd.Series:
    """Whether a person's next move undid each automatic transition within 7 days."""
    manual_next = automatic["next_actor"].notna()
    soon = automatic["next_created_at"] - automatic["created_at"] <= REVERT_WINDOW
    follow_up = (automatic["to_tag"] == RISK_TAG) & automatic["next_to_tag"].isin(RISK_FOLLOW_UPS)
    return manual_next & soon & ~follow_up


def automation_accuracy(
    log: pd.DataFrame, as_of: pd.Timestamp, outcomes: pd.DataFrame | None
) -> Kpi:
    """Share of automatic transitions neither reverted by a person nor refuted by the label."""
    automatic = log[log["rule_id"].notna()]
    settled = automatic["created_at"] + REVERT_WINDOW <= as_of.tz_localize("UTC")
    judged = automatic[settled].copy()
    reverted = _reverted(judged)
    is_risk = judged["to_tag"] == RISK_TAG
    refuted = pd.Series(False, index=judged.index)
    unlabelled = int(is_risk.sum())
    if outcomes is not None:
        labels = (
            judged[["customer_id", "as_of"]]
            .merge(
                outcomes[["customer_id", "as_of", "churned"]],
                on=["customer_id", "as_of"],
                how="left",
            )["churned"]
            .to_numpy()
        )
        refuted = is_risk & pd.Series(labels == 0, index=judged.index)
        unlabelled = int((is_risk & pd.Series(pd.isna(labels), index=judged.index)).sum())
    correct = int((~reverted & ~refuted).sum())
    detail = (
        f"{correct} of {len(judged)} automatic transitions held up: {int(reverted.sum())} "
        f"reverted by a person within 7 days, {int(refuted.sum())} risk moves refuted by the "
        f"label ({unlabelled} without one); {int((~settled).sum())} younger than 7 days not judged"
        if len(judged)
        else f"no automatic transitions 7+ days old yet ({int((~settled).sum())} younger)"
    )
    return _kpi(
        "automation_accuracy",
        _percent(correct, len(judged)),
        detail,
    )


def compute_kpis(
    transitions: pd.DataFrame,
    scores: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    as_of: date,
    outcomes: pd.DataFrame | None = None,
) -> list[Kpi]:
    """The six KPIs at ``as_of`` (see the module docstring for their definitions).

    Args:
        transitions: the audit log (``TRANSITIONS_SCHEMA``), any period; later rows are ignored.
        scores: stored scores (``STORED_SCORES_SCHEMA``); their ``control`` flags split recovery.
        customers: the customers contract (``features.schemas.customers_schema``).
        as_of: the day the KPIs describe (00:00 UTC of that day).
        outcomes: optional churn labels (``features.schemas.labels_schema``).

    Raises:
        ValueError: a frame breaks its contract (names the frame, column and values).
    """
    day = pd.Timestamp(as_of.year, as_of.month, as_of.day)
    log = _log_until(validate_frame(transitions, TRANSITIONS_SCHEMA), day)
    known_scores = validate_frame(scores, STORED_SCORES_SCHEMA)
    known_scores = known_scores[known_scores["as_of"] <= day]
    labels = None if outcomes is None else validate_frame(outcomes, labels_schema())
    return [
        active_learner_rate(log),
        progression_velocity(log),
        mastery_within_60_days(log, validate_frame(customers, customers_schema()), day),
        risk_detection_hours(log),
        recovery_rate(log, known_scores),
        automation_accuracy(log, day, labels),
    ]


__all__ = [
    "ACTIVE_TAGS",
    "KPI_TARGETS",
    "RISK_TAGS",
    "Kpi",
    "active_learner_rate",
    "automation_accuracy",
    "compute_kpis",
    "mastery_within_60_days",
    "progression_velocity",
    "recovery_rate",
    "risk_detection_hours",
]
