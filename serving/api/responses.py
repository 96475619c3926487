"""Response bodies from what the app layer returns (``serving.app``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from serving.api.models import (
    ExplainResponse,
    OverrideOut,
    ReasonOut,
    ScoreOut,
    ScoreResponse,
    StatusResponse,
    TransitionOut,
)
from serving.app.online import ScoreResult
from serving.app.status import LearnerStatus
from serving.core.assess import Assessment


def score_response(result: ScoreResult) -> ScoreResponse:
    """The body of ``/score``."""
    version = result.model_version
    return ScoreResponse(
        as_of=result.as_of,
        dry_run=not result.applied,
        rules_only=version is None,
        model_version=version,
        transitions_written=result.transitions_written,
        learners=result.records,
    )


def explain_response(assessment: Assessment, feature_source: str) -> ExplainResponse:
    """The body of ``/explain``: every feature's points for the assessment's one learner."""
    explanation = assessment.explanation(0)
    scores = assessment.scores.iloc[0]
    return ExplainResponse(
        customer_id=str(scores["customer_id"]),
        as_of=assessment.as_of,
        p_churn=scores["p_churn"],
        p_low=scores["p_low"],
        p_high=scores["p_high"],
        confidence=scores["confidence"],
        p_base=explanation.p_base,
        p_raw=explanation.p_raw,
        model_version=assessment.model_version,
        feature_source=feature_source,
        reasons=[ReasonOut(**reason.as_dict()) for reason in explanation.reasons],
    )


def status_response(status: LearnerStatus) -> StatusResponse:
    """The body of ``/status`` and ``/override``."""
    override = status.override
    return StatusResponse(
        customer_id=status.customer_id,
        tag=status.tag,
        tag_name=status.tag_name,
        since=status.since,
        score=None if status.score is None else _score_out(status.score),
        override=None if override is None else OverrideOut(**override),
        history=[TransitionOut(**_plain(row)) for row in status.history.to_dict("records")],
    )


def _score_out(row: dict[str, Any]) -> ScoreOut:
    """The stored score row's public fields (the interval and run id stay in the store)."""
    plain = _plain(row)
    # A store without the campaign columns (issue 12) leaves them at their default, null.
    return ScoreOut(**{name: plain[name] for name in ScoreOut.model_fields if name in plain})


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A history row with pandas' missing values as None and timestamps as Python values."""
    plain = {}
    for key, value in row.items():
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            plain[key] = None
        elif isinstance(value, pd.Timestamp):
            plain[key] = value.to_pydatetime() if key == "created_at" else value.date()
        else:
            plain[key] = value
    return plain


__all__ = ["explain_response", "score_response", "status_response"]
