"""What a caller asks of lstep about one learner on one day, in plain values.

The HTTP layer turns request bodies into ``LearnerAsk``s; the feature assembly
(``serving.infra.learners``) and the online scorer (``serving.app.online``) take them, so neither
depends on the request models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class LearnerAsk:
    """One learner to assess on one day.

    Attributes:
        customer_id: the learner.
        as_of: the day (features use events before its 00:00 UTC).
        now: when the ask arrived (aware): inline events and enrolments after it break the
            contracts.
        events: inline events (contract columns but customer_id), or None: from the event store.
        customer: the learner's customer record (product_tag, enrolled_at, mrr) sent with inline
            events, replacing the stored one; None: the stored one.
    """

    customer_id: str
    as_of: date
    now: datetime
    events: tuple[Mapping[str, Any], ...] | None = None
    customer: Mapping[str, Any] | None = None

    @property
    def inline(self) -> bool:
        """The features come from the events in the ask."""
        return self.events is not None


__all__ = ["LearnerAsk"]
