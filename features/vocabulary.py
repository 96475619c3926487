"""The canonical event vocabulary, channels and product tags (DESIGN §3)."""

from __future__ import annotations

CANONICAL_EVENT_TYPES: tuple[str, ...] = (
    "session",
    "lesson_completed",
    "milestone_completed",
    "quiz_attempted",
    "quiz_passed",
    "feature_used",
    "community_post",
    "community_reply",
    "video_watched",
    "subscription_cancelled",
)
OTHER_EVENT_TYPE = "other"
"""Where unmapped event types go with ``--allow-unknown``."""

CHANNELS: tuple[str, ...] = ("web", "mobile", "api")

PRODUCT_TAGS: dict[str, str] = {
    "PT_001": "PPAL Pro",
    "PT_002": "PPAL Enterprise",
    "PT_003": "PPAL Freemium",
}
