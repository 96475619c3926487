"""What a caller asks of lstep about one learner on one day, in plain values.

The HTTP layer turns request bodies into ``LearnerAsk``s; the feature assembly
(``serving.infra.learners``) and the online scorer (``serving.app.online``) take them, so neither
depends on the request models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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


def rounds(asks: Sequence[LearnerAsk]) -> Iterator[list[int]]:
    """Positions of ``asks`` grouped by day, then split so that no group repeats a learner.

    Concurrent requests merged into one call may ask for the same learner (by id, or with
    different inline events): features are assembled for each learner once per call.
    """
    by_day: dict[date, list[list[int]]] = {}
    for position, ask in enumerate(asks):
        groups = by_day.setdefault(ask.as_of, [])
        free = next(
            (g for g in groups if all(asks[p].customer_id != ask.customer_id for p in g)), None
        )
        if free is None:
            groups.append([position])
        else:
            free.append(position)
    for groups in by_day.values():
        yield from groups


__all__ = ["LearnerAsk", "rounds"]
