"""What a batch day did, as data: tag counts before and after, moves by rule, the call list.

``summarise`` turns a day's assessment and the store's answer into the fields of
``BatchResult``; the CLI renders it (``serving.cli.render``), a scheduler can read it as data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from serving.core.assess import Assessment
from serving.core.calllist import call_list, urgent_rows
from serving.core.frames import RunRecord, is_in
from serving.core.tags import STATUS_TAGS

TOP_LEARNERS = 20
"""Learners of the day's call list in the summary."""


@dataclass(frozen=True)
class TopLearner:
    """One learner of the day's call list."""

    customer_id: str
    priority: str
    action: str
    to_tag: str
    p_churn: float | None
    value_at_risk: float
    rule_id: str | None
    reasons: tuple[str, ...]
    why: str | None = None
    """The facts today's rule fired on (moved or held), in words; None otherwise."""


@dataclass(frozen=True)
class BatchResult:
    """What one day's run did (or, for a dry run, would do).

    Attributes:
        as_of: the batch day.
        run: the stored run record; None for a dry run. When ``already_done``, the earlier run.
        dry_run: nothing was written.
        already_done: the day was completed before; nothing was recomputed or written.
        rules_only: no model scored the day.
        model_version: the champion's version (None when rules-only).
        learners: learners decided on; ``eligible`` of them eligible, ``live_inactive`` kept
            because their stored tag is live.
        tags_before, tags_after: learners per tag in the store before and after the day.
        transitions_by_rule: moves per rule id that the day made (or would make).
        held: decisions held per reason (cooldown, override).
        skipped: changed decisions the store did not apply, per reason (see ``StateStore``).
        top_learners: the top P1/P2 learners outside the control group, most value at risk first.
        control_excluded: P1/P2 learners left off the list because they are in the control group.
        to_call: P1/P2 learners outside the control group: the day's personal outreach.
        over_capacity: learners the day's capacity moved from P1/P2 to automated outreach.
        overflow_priority: the priority they were moved to (None when none was moved).
        stage_seconds: wall time per stage.
        feature_snapshot: where the day's features were written (None for a dry run).
        assessment: the day's assessment (None when the day was done before).
        window: how the day's window was made when it could be carried (``features.carry``):
            "carried from D" or "aggregated: why"; empty otherwise.
        inputs: how the day's inputs were checked (``BatchInputs.how``): "proved in full",
            "proved since D: ..." (``features.kept_proof``), "validated in full: why"; empty
            when they were checked before the day (another engine, a backfill's later days).
    """

    as_of: date
    run: RunRecord | None
    dry_run: bool
    already_done: bool
    rules_only: bool
    model_version: str | None
    learners: int = 0
    eligible: int = 0
    live_inactive: int = 0
    tags_before: dict[str, int] = field(default_factory=dict)
    tags_after: dict[str, int] = field(default_factory=dict)
    transitions_by_rule: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    top_learners: tuple[TopLearner, ...] = ()
    control_excluded: int = 0
    to_call: int = 0
    over_capacity: int = 0
    overflow_priority: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    feature_snapshot: Path | None = None
    assessment: Assessment | None = field(default=None, repr=False, compare=False)
    window: str = ""
    inputs: str = ""

    @property
    def transitions(self) -> int:
        """Moves the day made (or would make)."""
        return sum(self.transitions_by_rule.values())


def tag_counts(tags: pd.Series) -> dict[str, int]:
    """Learners per status tag, in tag order (tags with none left out)."""
    return _in_tag_order(_counts(tags))


def _counts(tags: pd.Series) -> Counter[str]:
    """How many of each value ``tags`` holds (nulls left out), by its text.

    Counted on the column itself: a categorical (the decisions' tags) counts its codes, where
    ``astype(str)`` first made a million strings at 1M learners (~0.25 s a call).
    """
    return Counter({str(tag): int(count) for tag, count in tags.value_counts().items()})


def _in_tag_order(counts: Counter[str]) -> dict[str, int]:
    return {tag: counts[tag] for tag in STATUS_TAGS if counts[tag]}


def summarise(
    assessment: Assessment,
    state: pd.DataFrame,
    run: RunRecord | None,
    stored_tags: pd.Series | None,
    top: int = TOP_LEARNERS,
) -> dict[str, Any]:
    """The summary fields of ``BatchResult``.

    Args:
        assessment: the day's assessment.
        state: the state the day was decided on.
        run: the stored run (None for a dry run).
        stored_tags: the store's tags after the write, when it skipped moves (else None: the
            tags after are the decisions applied to ``state``).
        top: length of the call list.
    """
    decisions = assessment.decisions
    skipped = dict((run.summary or {}).get("skipped", {})) if run is not None else {}
    by_rule = decisions.loc[decisions["changed"], "rule_id"].astype(str).value_counts()
    held = decisions["held"].dropna().astype(str).value_counts()
    listed, control_excluded = _top_learners(assessment, top)
    urgent = urgent_rows(decisions)
    over = decisions["over_capacity"].fillna(False).to_numpy(bool)
    moved_to = decisions.loc[over, "priority"].astype(str).unique()
    return {
        "tags_before": tag_counts(state["tag"]),
        "tags_after": (
            tag_counts(stored_tags) if stored_tags is not None else _counts_after(state, decisions)
        ),
        "transitions_by_rule": {str(rule): int(count) for rule, count in by_rule.items()},
        "held": {str(reason): int(count) for reason, count in held.items()},
        "skipped": {str(reason): int(count) for reason, count in skipped.items()},
        "top_learners": listed,
        "control_excluded": control_excluded,
        "to_call": int((~urgent["control"].astype(bool)).sum()),
        "over_capacity": int(over.sum()),
        "overflow_priority": str(moved_to[0]) if len(moved_to) else None,
    }


def _counts_after(state: pd.DataFrame, decisions: pd.DataFrame) -> dict[str, int]:
    """``tag_counts`` of each learner's tag once the decisions are applied (learners without a
    decision keep theirs): the decided learners' new tags counted, then the others' stored."""
    decided = decisions.loc[decisions["to_tag"].notna(), ["customer_id", "to_tag"]]
    undecided = state.loc[~is_in(state["customer_id"], decided["customer_id"]), "tag"]
    return _in_tag_order(_counts(decided["to_tag"]) + _counts(undecided))


def _top_learners(assessment: Assessment, top: int) -> tuple[tuple[TopLearner, ...], int]:
    """The call list (engine order: value at risk) with each learner's reasons, and the
    number of urgent learners left out because they are in the control group."""
    decisions = assessment.decisions
    listed = call_list(decisions, top, ordered=True)
    positions = assessment.positions_of(listed["customer_id"].astype(str).tolist())
    assessment.reasons(positions)  # one TreeSHAP call for the whole list
    learners = tuple(
        TopLearner(
            customer_id=str(row["customer_id"]),
            priority=str(row["priority"]),
            action=str(row["action"]),
            to_tag=str(row["to_tag"]),
            p_churn=None if pd.isna(row["p_churn"]) else float(row["p_churn"]),
            value_at_risk=float(row["value_at_risk"]),
            rule_id=None if pd.isna(row["rule_id"]) else str(row["rule_id"]),
            reasons=assessment.reason_texts(position) or (str(row["description"]),),
            why=None if pd.isna(row["why"]) else str(row["why"]),
        )
        for position, row in zip(positions, listed.to_dict("records"), strict=True)
    )
    return learners, int(urgent_rows(decisions)["control"].sum())


__all__ = ["TOP_LEARNERS", "BatchResult", "TopLearner", "summarise", "tag_counts"]
