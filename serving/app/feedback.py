"""Campaign feedback: what happened to a sent message (``POST /events/campaign``).

Delivered, opened, clicked, converted: each recorded once per message, so a receiver that
reports twice (webhooks are at least once too) changes nothing the second time.
"""

from __future__ import annotations

from datetime import datetime

from serving.core.messages import FEEDBACK_KINDS
from serving.core.problems import Invalid
from serving.infra.store import StateStore


def record_campaign_event(
    store: StateStore, message_id: str, kind: str, *, source: str, now: datetime
) -> bool:
    """Record one feedback event of an outbox message.

    Returns:
        True when recorded; False when the message already had this kind (nothing changed).

    Raises:
        Invalid: ``kind`` is not one of ``FEEDBACK_KINDS`` (names the field and the value).
        NotFound: no message ``message_id`` in the outbox.
    """
    if kind not in FEEDBACK_KINDS:
        raise Invalid(f"kind: {kind!r} is not one of {', '.join(FEEDBACK_KINDS)}")
    return store.record_feedback(message_id, kind, source=source, now=now)


__all__ = ["record_campaign_event"]
