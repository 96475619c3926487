"""A learner's status and the overrides a CS user sets: what ``lstep status``/``override`` and
``/status``/``/override`` share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd

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
        override: the open override (tag, actor, reason, created_at, expires), or None.
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
    store: StateStore,
    customer_id: str,
    tag: str,
    *,
    actor: str,
    reason: str,
    expires: date | None,
    now: datetime,
) -> LearnerStatus:
    """Pin a learner's tag by hand; automatic rules then hold until it expires (except ST_006).

    Raises:
        NotFound: the store has no status for them.
        Invalid: the override breaks a rule of overrides (named).
    """
    try:
        store.set_override(customer_id, tag, actor=actor, reason=reason, expires=expires, now=now)
    except ValueError as error:
        unknown = store.current(customer_id) is None
        raise (NotFound if unknown else Invalid)(str(error)) from None
    return learner_status(store, customer_id)


__all__ = ["LearnerStatus", "learner_status", "set_override"]
