"""The status tags (DESIGN §5) as constants, for code that needs them before any rules load.

``rules/tags.yaml`` is the source of truth for names, entry and terminal flags; the constants
here are what the store's CHECK constraints, the API's vocabulary and the KPIs are written
against, and ``tests/serving/core/test_tags.py`` keeps the two equal.
"""

from __future__ import annotations

STATUS_TAGS: dict[str, str] = {
    "ST_001": "Learning:Active",
    "ST_002": "Learning:Progressing",
    "ST_003": "Learning:Mastery",
    "ST_004": "Risk:Declining",
    "ST_005": "Risk:Re-engagement",
    "ST_006": "Status:Churned",
}
MANUAL_ONLY_TAG = "ST_005"
CHURNED_TAG = "ST_006"
RISK_TAG = "ST_004"
CAMPAIGN_KIND, HOLD_KIND = "campaign", "hold"
OVERRIDE_KINDS = (CAMPAIGN_KIND, HOLD_KIND)
"""Kinds of override: a time-boxed retention campaign in ST_005 (the exit rules keep running),
or a hold (automatic moves other than to a terminal tag wait until it ends)."""

__all__ = [
    "CAMPAIGN_KIND",
    "CHURNED_TAG",
    "HOLD_KIND",
    "MANUAL_ONLY_TAG",
    "OVERRIDE_KINDS",
    "RISK_TAG",
    "STATUS_TAGS",
]
