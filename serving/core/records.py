"""What lstep says of one learner: the record the API returns, from an assessment's rows.

``learner_record`` is the one place a record is assembled; the risk indicators it quotes are the
catalog's ``risk_*`` flags that are on. ``rule_wording`` gives the rules engine the catalog's
labels and phrases, with which it words why a rule moved or held a learner (the ``why``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pandas as pd

from features.catalog import load_catalog
from models.churn import PREDICTION_COLUMNS
from models.explain import Reason
from rules import Wording
from serving.core.calllist import VALUE_FIELDS


def learner_record(
    score: Mapping[str, Any],
    decision: Mapping[str, Any],
    reasons: Sequence[Reason],
    indicators: Sequence[Mapping[str, str]],
    model_version: str | None,
) -> dict[str, Any]:
    """What the API says of one learner, from their score, decision, reasons and indicators.

    Args:
        score: customer_id, as_of and the prediction columns (``SCORES_SCHEMA`` row).
        decision: the rules engine's decision fields (``DECISION_FIELDS``).
        reasons: the learner's top reason codes (empty in rules-only mode).
        indicators: the risk indicators on (``Assessment.indicators``).
        model_version: the champion's version, None in rules-only mode.
    """
    return {
        "customer_id": str(score["customer_id"]),
        "as_of": pd.Timestamp(score["as_of"]).date().isoformat(),
        **{name: _number(score[name]) for name in PREDICTION_COLUMNS},
        "current_tag": _text(decision["from_tag"]),
        "proposed_tag": _text(decision["to_tag"]),
        "rule_id": _text(decision["rule_id"]),
        "rule_description": _text(decision["description"]),
        "why": _text(decision["why"]),
        "signal": _text(decision["signal"]),
        "priority": _text(decision["priority"]),
        "action": _text(decision["action"]),
        "campaign_id": _text(decision["campaign_id"]),
        "channel": _text(decision["channel"]),
        "control": bool(decision["control"]),
        # None: decided without the rest of the day, so the day's capacity was not applied.
        "over_capacity": None
        if _missing(decision["over_capacity"])
        else bool(decision["over_capacity"]),
        "behaviour_tags": _ids(decision["behaviour_tags"]),
        **{name: _number(decision[name]) for name in VALUE_FIELDS},
        "reasons": [reason.as_dict() for reason in reasons],
        "risk_indicators": [dict(indicator) for indicator in indicators],
        "model_version": model_version,
    }


@cache
def rule_wording() -> Wording:
    """The feature catalog's labels, phrases and risk indicators, as the rules engine words them."""
    catalog = load_catalog()
    return Wording(
        labels={spec.name: spec.label for spec in catalog.features},
        phrases={spec.name: spec.phrase for spec in catalog.features if spec.phrase},
        evidence={spec.name: spec.evidence for spec in catalog.features if spec.evidence},
        indicators=tuple(catalog.risk_indicators),
    )


def risk_flags(columns: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(name, label) of the catalog's risk indicators among ``columns``, in catalog order."""
    catalog = load_catalog()
    present = set(columns)
    return tuple(
        (name, catalog.get(name).label) for name in catalog.risk_indicators if name in present
    )


def is_on(value: Any) -> bool:
    """A flag's truth; a missing flag (its event type absent from the log) is off."""
    return False if _missing(value) else bool(value)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _number(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _ids(value: Any) -> list[str]:
    """A ``behaviour_tags`` cell ("BT_002,BT_006", "" or null) as a list of ids."""
    return [] if _missing(value) else [part for part in str(value).split(",") if part]


__all__ = ["is_on", "learner_record", "risk_flags", "rule_wording"]
