"""The run-based KPIs: progression velocity and at-risk detection speed (``serving.app.kpis``
defines them), measured from the runs of qualifying days (``serving.app.qualifying``).

Each is split into what the KPI's day does not change (the moves, the runs that end at them)
and the verdict on a day, so that a trend finds the former once (``serving.app.kpi_days``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import numpy as np
import pandas as pd

from serving.app.kpi_model import Kpi
from serving.app.kpi_model import kpi_of as _kpi
from serving.app.qualifying import (
    BEFORE_HISTORY,
    MEASURED,
    NO_INPUTS,
    NOT_QUALIFYING,
    DecisionDays,
    reads_state,
    run_starts,
)
from serving.core.tags import RISK_TAG

DAY = timedelta(days=1)
NO_DECISIONS = "no daily decision inputs (feature snapshots and scores) given"
ONBOARDED = "onboarded"
"""A run status: the learner's entry into the from tag was their onboarding into the store."""


def _moves_into(log: pd.DataFrame, target: str, from_tag: str | None = None) -> pd.DataFrame:
    """The automatic moves into ``target`` with the day each learner entered their from tag."""
    # only the columns read: a long log's every column taken for the moves' rows cost seconds
    read = [
        "customer_id", "as_of", "from_tag", "rule_id",
        "previous_to_tag", "previous_as_of", "previous_from_tag",
    ]  # fmt: skip
    moves = log.loc[(log["to_tag"] == target) & log["rule_id"].notna(), read]
    if from_tag is not None:
        moves = moves[(moves["from_tag"] == from_tag) & (moves["previous_to_tag"] == from_tag)]
    # The previous transition put the learner in from_tag; none means a learner seen first.
    entered = moves["previous_as_of"].where(moves["from_tag"].notna())
    return pd.DataFrame(
        {
            "customer_id": moves["customer_id"].astype(str).to_numpy(),
            "as_of": moves["as_of"].to_numpy(),
            "from_tag": moves["from_tag"].astype(object).to_numpy(),
            "rule_id": moves["rule_id"].astype(object).to_numpy(),
            "entered": pd.to_datetime(entered).to_numpy(),
            # entered from_tag as a new learner: their first tag in the store
            "entered_new": (moves["previous_from_tag"].isna() & entered.notna()).to_numpy(),
        }
    )


def _left_out(counts: Mapping[str, int], decisions: DecisionDays) -> str:
    """What the detail says of the moves a run could not measure (``counts`` by status), and
    of missing snapshots."""
    reasons = {
        BEFORE_HISTORY: "whose run starts before the stored days or at a missing snapshot",
        NO_INPUTS: "on days without a snapshot",
        NOT_QUALIFYING: "whose day no longer meets the rules",
        ONBOARDED: "tagged ST_001 on their first stored day, when they may have long been in it",
    }
    parts = [f"{int(counts[key])} {text}" for key, text in reasons.items() if counts.get(key, 0)]
    note = f"; left out: {', '.join(parts)}" if parts else ""
    if decisions.missing:
        days = ", ".join(str(day) for day in decisions.missing[:3])
        more = "..." if len(decisions.missing) > 3 else ""
        note += f"; snapshots missing for {len(decisions.missing)} batch days ({days}{more})"
    return note


def progression_velocity(
    log: pd.DataFrame, decisions: DecisionDays | None, runs: pd.DataFrame | None = None
) -> Kpi:
    """Median days from entering ST_001 to first qualifying for the move to ST_002 (``runs``:
    ``qualifying_runs`` into ST_002, when already found)."""
    moves = progression_moves(log)
    measured = None
    if len(moves) and decisions is not None:
        measured = progression_runs(moves, decisions, runs)
    return progression_kpi(len(moves), measured, decisions)


def progression_moves(log: pd.DataFrame) -> pd.DataFrame:
    """The automatic ST_001 -> ST_002 moves progression velocity measures (``_moves_into``)."""
    return _moves_into(log, "ST_002", from_tag="ST_001")


def progression_runs(
    moves: pd.DataFrame, decisions: DecisionDays, runs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``run_starts`` of ``progression_moves``, onboarded learners' moves marked ``ONBOARDED``.

    Each move's row depends on that move alone, not on the day the KPI describes.
    """
    runs = run_starts(moves, decisions, "ST_002", runs)
    # A learner first tagged when the history began (the day before has no stored inputs) was
    # onboarded into ST_001 then; when they really began is unknown.
    onboarded = runs["entered_new"] & ~(runs["entered"] - DAY).isin(decisions.days)
    runs.loc[onboarded & (runs["status"] == MEASURED), "status"] = ONBOARDED
    return runs


def progression_kpi(moves: int, runs: pd.DataFrame | None, decisions: DecisionDays | None) -> Kpi:
    """Progression velocity of ``moves`` moves, measured by ``runs`` (``progression_runs``;
    None without decision inputs)."""
    if not moves:
        return _kpi("progression_velocity", None, "no ST_001 -> ST_002 moves yet")
    if decisions is None or runs is None:
        return _kpi("progression_velocity", None, NO_DECISIONS)
    measured = runs[runs["status"] == MEASURED]
    days = (measured["first_day"] - measured["entered"]).dt.days.to_numpy()
    after = (measured["as_of"] - measured["entered"]).dt.days.to_numpy()
    return progression_verdict(days, after, status_counts(runs), decisions)


def status_counts(runs: pd.DataFrame) -> dict[str, int]:
    """How many moves have each run status."""
    return {str(key): int(count) for key, count in runs["status"].value_counts().items()}


def progression_verdict(
    days: np.ndarray, after: np.ndarray, counts: Mapping[str, int], decisions: DecisionDays
) -> Kpi:
    """Progression velocity of the measured moves' ``days`` to their first qualifying day and
    ``after`` days to the move, the moves counted by run status in ``counts``."""
    value = float(np.median(days)) if len(days) else None
    detail = (
        f"median of {len(days)} ST_001 -> ST_002 moves, days to the first qualifying day "
        f"(range {days.min()}-{days.max()}; the moves themselves came after a median "
        f"{np.median(after):.0f} days)"
        if len(days)
        else "no ST_001 -> ST_002 move could be measured"
    )
    return _kpi("progression_velocity", value, detail + _left_out(counts, decisions))


def risk_detection_days(
    log: pd.DataFrame, decisions: DecisionDays | None, runs: pd.DataFrame | None = None
) -> Kpi:
    """Median days from the first day a learner met an ST_004 condition to the automatic move
    (``runs``: ``qualifying_runs`` into ST_004, when already found).

    A move by a rule that reads the state rather than the learner's activity (R16: a retention
    campaign's box ended) detects nothing: such moves are left out.
    """
    moves = detection_moves(log, decisions)
    measured = None
    if len(moves) and decisions is not None:
        measured = run_starts(moves, decisions, RISK_TAG, runs)
    return detection_kpi(len(moves), measured, decisions)


def detection_moves(log: pd.DataFrame, decisions: DecisionDays | None) -> pd.DataFrame:
    """The automatic moves into ST_004 detection speed measures: those of rules reading the
    learner's activity (all of them without decision inputs)."""
    moves = _moves_into(log, RISK_TAG)
    if decisions is not None:
        state_rules = [rule.id for rule in decisions.ruleset.rules if reads_state(rule)]
        moves = moves[~moves["rule_id"].isin(state_rules)]
    return moves


def detection_kpi(moves: int, runs: pd.DataFrame | None, decisions: DecisionDays | None) -> Kpi:
    """Detection speed of ``moves`` moves, measured by ``runs`` (``run_starts`` of
    ``detection_moves``; None without decision inputs)."""
    if not moves:
        return _kpi("risk_detection_days", None, "no automatic ST_004 moves yet")
    if decisions is None or runs is None:
        return _kpi("risk_detection_days", None, NO_DECISIONS)
    measured = runs[runs["status"] == MEASURED]
    days = (measured["as_of"] - measured["first_day"]).dt.days.to_numpy()
    return detection_verdict(days, status_counts(runs), decisions)


def detection_verdict(days: np.ndarray, counts: Mapping[str, int], decisions: DecisionDays) -> Kpi:
    """Detection speed of the measured moves' ``days`` from their first qualifying day, the
    moves counted by run status in ``counts``."""
    value = float(np.median(days)) if len(days) else None
    detail = (
        f"median of {len(days)} automatic ST_004 moves (range {days.min()}-{days.max()} days, "
        f"{int((days <= 1).sum())} within a day)"
        if len(days)
        else "no automatic ST_004 move could be measured"
    )
    return _kpi("risk_detection_days", value, detail + _left_out(counts, decisions))


__all__ = [
    "NO_DECISIONS",
    "ONBOARDED",
    "detection_kpi",
    "detection_moves",
    "detection_verdict",
    "progression_kpi",
    "progression_moves",
    "progression_runs",
    "progression_velocity",
    "progression_verdict",
    "risk_detection_days",
    "status_counts",
]
