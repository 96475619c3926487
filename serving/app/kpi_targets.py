"""The six KPIs' names, targets and one-line definitions (``serving.app.kpis`` computes them).

Plain data, kept apart from the computation so that ``kpis`` stays one readable module.
"""

from __future__ import annotations

from typing import Literal

KPI_TARGETS: dict[str, tuple[str, Literal[">=", "<="], float, str]] = {
    "active_learner_rate": ("Active learner rate", ">=", 70.0, "%"),
    "progression_velocity": ("Progression velocity", "<=", 14.0, "days"),
    "mastery_60d": ("Mastery within 60 days", ">=", 40.0, "%"),
    "risk_detection_days": ("At-risk detection speed", "<=", 1.0, "days"),
    "recovery_rate": ("Recovery success rate", ">=", 35.0, "%"),
    "automation_accuracy": ("Automation accuracy", ">=", 85.0, "%"),
}
"""id -> (name, comparison, target, unit), in report order."""

KPI_DEFINITIONS: dict[str, str] = {
    "active_learner_rate": "Share of live learners (ST_001-ST_005) whose tag is ST_001 or ST_002.",
    "progression_velocity": (
        "Median data days from entering ST_001 to the first day the learner met an ST_002 rule's "
        "condition (not the cooldown-held move)."
    ),
    "mastery_60d": (
        "Share of learners whose first 60 days are all in the history that reached ST_003 within "
        "60 days of enrolling."
    ),
    "risk_detection_days": (
        "Median data days from the first day a learner met an ST_004 rule's condition to the "
        "automatic ST_004 move."
    ),
    "recovery_rate": (
        "Share of ended ST_004/ST_005 episodes that ended in ST_001/ST_002 (treated vs control)."
    ),
    "automation_accuracy": (
        "Share of automatic moves 7+ data days old not reverted by a person within 7 days and, "
        "for ST_004, not refuted by a complete label."
    ),
}
"""id -> the one-line definition printed under the KPI by ``lstep kpis`` and the report."""


__all__ = ["KPI_DEFINITIONS", "KPI_TARGETS"]
