"""Planning of state-store writes: which rows a batch day or an override writes (pure).

The store (``serving.infra.store``) reads the state inside its writer transaction and asks these
functions what to write; they never touch the database. Checks of what comes in (decisions of
the right day, override requests) live here too, so the rules of a write read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from serving.core import frames  # its pandera schemas are read when a batch is applied
from serving.core.calllist import LIFETIME_FIELDS
from serving.core.frames import (
    STORED_SCORES_COLUMNS,
    TRANSITIONS_COLUMNS,
    numbered,
    positions_in,
    validate_frame,
)
from serving.core.tags import CHURNED_TAG, MANUAL_ONLY_TAG

EXAMPLES = 10
"""Learners quoted by name in an error or a run summary."""
MANUAL_SIGNAL = "manual"
"""The ``signal`` of a transition a person made."""
_MODEL_SCORE_COLUMNS = ("customer_id", "p_churn", "p_low", "p_high", "confidence")


@dataclass(frozen=True)
class TransitionPlan:
    """Which changed decisions become transitions, and which were skipped and why."""

    applied: pd.DataFrame
    skipped: dict[str, list[str]]


@dataclass(frozen=True)
class BatchDay:
    """One ``apply_batch`` call: the day, the run's identity and when it started."""

    as_of: date
    run_id: str
    model_version: str | None
    rules_only: bool
    now: datetime
    replace: bool

    def run_values(
        self,
        status: str,
        finished_at: datetime | None = None,
        summary: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``batch_runs`` row of this run in ``status``."""
        return {
            "run_id": self.run_id,
            "as_of": self.as_of,
            "status": status,
            "started_at": self.now,
            "finished_at": finished_at,
            "model_version": self.model_version,
            "rules_only": self.rules_only,
            "summary": summary,
        }


@dataclass(frozen=True)
class AppliedResult:
    """What ``StateStore.apply_learners`` did.

    Attributes:
        run_id: the run id stamped on the written transitions.
        outcomes: customer_id -> None when the learner's move was written, else why it was
            skipped (``overridden``, ``stale_from_tag``, ``already_churned``); changed decisions
            only.
    """

    run_id: str
    outcomes: dict[str, str | None]

    @property
    def applied(self) -> list[str]:
        """The learners whose move was written."""
        return [customer_id for customer_id, reason in self.outcomes.items() if reason is None]


def require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name}={moment.isoformat()} is naive: pass a timezone-aware datetime")


def _examples(values: pd.Series) -> list[str]:
    return [str(value) for value in values.head(EXAMPLES)]


def text_of_categories(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    """``frame`` with its categorical columns that ``schema`` (pandera) types as text already
    coerced: each category once, then taken by the codes.

    The rules engine's decisions hold ten categorical columns; pandera coerces a category
    column row by row through Python strings (~0.2 s of CPU on a 200k-learner day, 15x this).
    The values and dtype are the ones pandera's own coercion gives (the categories go through
    it), and the schema still checks every row of the result: only the conversion is cheaper.
    """
    coerced = {}
    for name, column in schema.columns.items():
        values = frame.get(name)
        if values is None or not isinstance(values.dtype, pd.CategoricalDtype):
            continue
        if not pd.api.types.is_string_dtype(column.dtype.type):
            continue  # a code of -1 (missing) has no fill value in every dtype: left to pandera
        categories = column.dtype.coerce(pd.Series(values.cat.categories)).array
        taken = categories.take(values.cat.codes.to_numpy(), allow_fill=True)
        coerced[name] = pd.Series(taken, index=values.index, name=name)
    return frame.assign(**coerced) if coerced else frame


def checked_decisions(as_of: date, decisions: pd.DataFrame) -> pd.DataFrame:
    """The validated decisions of ``as_of``; changed rows must say where to and why."""
    schema = frames.DECISIONS_SCHEMA
    checked = validate_frame(text_of_categories(decisions, schema), schema)
    other_day = checked[checked["as_of"] != pd.Timestamp(as_of)]
    if len(other_day):
        raise ValueError(
            f"decisions: {len(other_day)} rows have an as_of other than {as_of} "
            f"(e.g. {_examples(other_day['as_of'].dt.date)})"
        )
    changed = checked[checked["changed"]]
    for column in ("to_tag", "rule_id", "description"):
        missing = changed[changed[column].isna()]
        if len(missing):
            raise ValueError(
                f"decisions: {len(missing)} changed rows have no {column} "
                f"(customers {_examples(missing['customer_id'])})"
            )
    manual_only = changed[changed["to_tag"] == MANUAL_ONLY_TAG]
    if len(manual_only):
        raise ValueError(
            f"decisions: {len(manual_only)} rows move learners to {MANUAL_ONLY_TAG}, which only "
            f"a person may set (customers {_examples(manual_only['customer_id'])})"
        )
    return checked


def score_rows(
    as_of: date,
    decisions: pd.DataFrame,
    scores: pd.DataFrame | None,
    run_id: str,
    model_version: str | None,
) -> pd.DataFrame:
    """One ``scores`` row per decision, in the decisions' order (the store writes them by
    customer_id); the model frame adds the interval ``p_low``/``p_high``."""
    model = validate_frame(
        scores if scores is not None else pd.DataFrame(columns=list(_MODEL_SCORE_COLUMNS)),
        frames.SCORES_INPUT_SCHEMA,
    )
    off_day = model[model["as_of"] != pd.Timestamp(as_of)] if "as_of" in model else model[:0]
    if len(off_day):
        raise ValueError(
            f"scores: {len(off_day)} rows have an as_of other than {as_of} "
            f"(customers {_examples(off_day['customer_id'])})"
        )
    # Arrow's hash lookup: an outer merge on a day's ids cost ~0.2 s at 200k (it sorts them).
    found_at = positions_in(decisions["customer_id"], model["customer_id"])
    _refuse_undecided(model, found_at)
    rows = numbered(decisions)
    model_columns = {name: _model_column(model, name, found_at) for name in ("p_low", "p_high")}
    for column in ("p_churn", "confidence"):  # what the rules used wins; the model fills gaps
        model_columns[column] = rows[column].fillna(_model_column(model, column, found_at))
    rows = rows.assign(**model_columns, as_of=as_of, model_version=model_version, run_id=run_id)
    for column in ("campaign_id", "channel", "behaviour_tags"):  # none before campaigns
        if column not in rows:
            rows[column] = None
    # Decisions built without the engine have no lifetime projection.
    for column in LIFETIME_FIELDS:
        rows[column] = rows[column].astype(float) if column in rows else np.nan
    return rows[list(STORED_SCORES_COLUMNS.dtypes)]


def _refuse_undecided(model: pd.DataFrame, found_at: np.ndarray) -> None:
    """Refuse model scores of learners without a decision (``found_at``: each decision's row in
    ``model``, -1 for none)."""
    decided = np.zeros(len(model), dtype=bool)
    decided[found_at[found_at >= 0]] = True
    undecided = model.loc[~decided, "customer_id"]
    if len(undecided):
        raise ValueError(
            f"scores: {len(undecided)} customers have a score but no decision "
            f"(e.g. {_examples(undecided)})"
        )


def _model_column(model: pd.DataFrame, name: str, found_at: np.ndarray) -> pd.Series:
    """``model[name]`` lined up with the decisions (``found_at``), NaN where no score."""
    values = np.full(len(found_at), np.nan)
    found = found_at >= 0
    values[found] = model[name].to_numpy(dtype=float)[found_at[found]]
    return pd.Series(values, name=name)


def plan_transitions(
    decisions: pd.DataFrame, current_tags: pd.DataFrame, overridden: set[str]
) -> TransitionPlan:
    """Keep the changed decisions that still apply to the state read inside the transaction."""
    changed = decisions[decisions["changed"]].merge(current_tags, on="customer_id", how="left")
    to_churn = changed["to_tag"] == CHURNED_TAG
    already_churned = to_churn & (changed["db_tag"] == CHURNED_TAG)
    # To ST_006 is a fact (30 days without events): it passes overrides and state changes.
    is_overridden = changed["customer_id"].isin(overridden) & ~to_churn
    is_stale = (changed["from_tag"].fillna("") != changed["db_tag"].fillna("")) & ~(
        to_churn | is_overridden
    )
    skipped = {
        "overridden": is_overridden,
        "stale_from_tag": is_stale,
        "already_churned": already_churned,
    }
    applied = changed[~(is_overridden | is_stale | already_churned)].copy()
    applied["from_tag"] = applied["db_tag"]  # the tag actually left, for the audit log
    return TransitionPlan(
        applied=applied,
        skipped={
            reason: changed.loc[mask, "customer_id"].tolist() for reason, mask in skipped.items()
        },
    )


def transition_rows(
    applied: pd.DataFrame, run_id: str, model_version: str | None, now: datetime
) -> pd.DataFrame:
    rows = applied.rename(columns={"description": "reason"})
    rows["as_of"] = rows["as_of"].dt.date
    rows["actor"] = None
    if "why" not in rows:
        rows["why"] = None
    rows["model_version"] = model_version
    rows["run_id"] = run_id
    rows["created_at"] = now
    return rows[[column for column in TRANSITIONS_COLUMNS.dtypes if column != "id"]]


def run_summary(
    decisions: pd.DataFrame, score_rows: pd.DataFrame, plan: TransitionPlan
) -> dict[str, Any]:
    """What the run did, for ``batch_runs.summary``: counts, and examples of skipped learners."""
    held_counts = decisions["held"].value_counts()
    over = decisions["over_capacity"] if "over_capacity" in decisions else pd.Series(dtype=bool)
    return {
        "decisions": len(decisions),
        "scores": len(score_rows),
        "changed_decisions": int(decisions["changed"].sum()),
        "held": {str(reason): int(count) for reason, count in held_counts.items()},
        # learners the day's capacity moved from personal to automated outreach
        "over_capacity": int(over.fillna(False).astype(bool).sum()),
        "transitions": len(plan.applied),
        "transitions_by_tag": {
            str(tag): int(count) for tag, count in plan.applied["to_tag"].value_counts().items()
        },
        "skipped": {reason: len(ids) for reason, ids in plan.skipped.items()},
        "skipped_examples": {reason: ids[:EXAMPLES] for reason, ids in plan.skipped.items() if ids},
    }


__all__ = [
    "EXAMPLES",
    "MANUAL_SIGNAL",
    "AppliedResult",
    "BatchDay",
    "TransitionPlan",
    "checked_decisions",
    "plan_transitions",
    "require_aware",
    "run_summary",
    "score_rows",
    "transition_rows",
]
