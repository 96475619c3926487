"""A learner's status and the overrides a CS user sets: what ``lstep status``/``override`` and
``/status``/``/override`` share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd

from serving.core.overrides import OverridePolicy, OverrideRequest
from serving.core.problems import Invalid, NotFound
from serving.core.tags import STATUS_TAGS
from serving.infra.store import StateStore


@dataclass(frozen=True)
class LearnerStatus:
    """A learner's current tag, open override and full history.

    Attributes:
        customer_id: the learner.
        tag: their current tag; ``tag_name`` its name.
        since: the day they entered it.
        override: the open override (tag, kind, actor, reason, created_at, effective_as_of,
            expires), or None.
        history: their transitions, oldest first (``TRANSITIONS_SCHEMA``), each with the rule's
            description (``reason``) and the facts it fired on (``why``).
        score: their latest stored score row (as_of, p_churn, confidence, priority, action, ...),
            or None when no batch scored them.
    """

    customer_id: str
    tag: str
    tag_name: str
    since: date
    override: dict[str, Any] | None
    history: pd.DataFrame
    score: dict[str, Any] | None = None

    @property
    def signal(self) -> str | None:
        """What fired for the move into the current tag (fact, rules, model, both), if a rule.

        The scores table keeps no signal; the audit log does, on the move that set the tag.
        """
        if self.history.empty:
            return None
        last = self.history.iloc[-1]
        if last["to_tag"] != self.tag or pd.isna(last["signal"]):
            return None
        return str(last["signal"])


def learner_status(store: StateStore, customer_id: str) -> LearnerStatus:
    """The learner's status.

    Raises:
        NotFound: the store has no status for them (never scored).
    """
    current = store.current(customer_id)
    if current is None:
        raise NotFound(f"unknown learner {customer_id!r}: the store has no status")
    return LearnerStatus(
        customer_id=customer_id,
        tag=current["tag"],
        tag_name=STATUS_TAGS[current["tag"]],
        since=current["since"],
        override=current["override"],
        history=store.history(customer_id),
        score=store.latest_score(customer_id),
    )


def set_override(
    store: StateStore, request: OverrideRequest, *, policy: OverridePolicy, now: datetime
) -> LearnerStatus:
    """Record an override on the data's clock (``serving.core.overrides``).

    Raises:
        NotFound: the store has no status for the learner.
        Invalid: the override breaks a rule of overrides (named).
    """
    try:
        store.set_override(request, policy=policy, now=now)
    except ValueError as error:
        raise _refusal(store, request.customer_id, error) from None
    return learner_status(store, request.customer_id)


def clear_override(
    store: StateStore,
    customer_id: str,
    *,
    words: tuple[str, str],
    now: datetime,
    effective: date | None = None,
) -> LearnerStatus:
    """End a learner's open override early; ``words`` = (actor, reason), both recorded.

    Raises:
        NotFound: the store has no status for the learner.
        Invalid: no open override, a blank actor or reason, or a day already decided.
    """
    try:
        store.clear_override(customer_id, words=words, now=now, effective=effective)
    except ValueError as error:
        raise _refusal(store, customer_id, error) from None
    return learner_status(store, customer_id)


def list_overrides(
    store: StateStore, *, now: datetime, customer_id: str | None = None, active: bool = False
) -> pd.DataFrame:
    """Overrides, newest first; ``active``: those applying on the next batch day or later."""
    live_from = store.next_batch_day(now) if active else None
    return store.overrides_frame(customer_id, live_from=live_from)


def _refusal(store: StateStore, customer_id: str, error: ValueError) -> Exception:
    unknown = store.current(customer_id) is None
    return (NotFound if unknown else Invalid)(str(error))


__all__ = [
    "LearnerStatus",
    "clear_override",
    "learner_status",
    "list_overrides",
    "set_override",
]
