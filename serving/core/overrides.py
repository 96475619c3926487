"""Overrides on the data's clock: what a CS user's request writes, and why it is refused (pure).

Two clocks are kept apart. An override applies to DATA days: from ``effective_as_of`` (by default
the day after the latest completed batch day: the next day the batch decides) up to, not
including, ``expires``, and before ``cleared_as_of`` when ended early. ``created_at`` and
``cleared_at`` are the wall-clock instants it was recorded and ended, for the audit only. So an
override recorded today for a log whose last day is in July takes effect on the July day after
the last batch, and a batch or a dry run of an earlier day does not see it.

Kinds: ``campaign`` (``--tag ST_005``: a retention campaign, time-boxed by ``tags.yaml``'s
``campaign``; the exit rules run meanwhile) and ``hold`` (any other tag, or the learner's own
tag: automatic moves other than to a terminal tag wait until it ends). A move into a tag is
allowed from the tags ``tags.yaml`` lists in the target's ``manual_from``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from serving.core.tags import CAMPAIGN_KIND, HOLD_KIND, MANUAL_ONLY_TAG, STATUS_TAGS

if TYPE_CHECKING:  # the rules package imports pandera: ~0.5 s that `lstep status` does not need
    from rules import RuleSet


@dataclass(frozen=True)
class OverrideRequest:
    """What a CS user asks for one learner.

    Attributes:
        customer_id: the learner.
        actor: who decides; reason: why (both quoted in the audit log).
        tag: the tag to move the learner to; None holds them at their current tag.
        effective: the first data day it applies to; None for the next batch day.
        expires: the first data day it no longer applies to; or ``days``: its length from
            ``effective``. Neither: a campaign gets the default box, a hold lasts until cleared.
    """

    customer_id: str
    actor: str
    reason: str
    tag: str | None = None
    effective: date | None = None
    expires: date | None = None
    days: int | None = None


@dataclass(frozen=True)
class OverridePolicy:
    """The rules of overrides, from ``tags.yaml``: allowed manual moves and the campaign box."""

    manual_from: Mapping[str, frozenset[str]]
    campaign_days: int
    campaign_min_days: int
    campaign_max_days: int

    @classmethod
    def of(cls, ruleset: RuleSet) -> OverridePolicy:
        """The policy the rules' ``tags.yaml`` states."""
        return cls(
            manual_from={tag.id: frozenset(tag.manual_from) for tag in ruleset.tags},
            campaign_days=ruleset.campaign.default_days,
            campaign_min_days=ruleset.campaign.min_days,
            campaign_max_days=ruleset.campaign.max_days,
        )


@dataclass(frozen=True)
class PlannedOverride:
    """The override row to write, and whether the learner changes tag (a manual transition)."""

    row: dict[str, Any]
    from_tag: str
    moves: bool


def next_batch_day(latest_completed: date | None, now: datetime) -> date:
    """The first data day a new override or clear may take effect on.

    Completed batch days are history: an override cannot change what they decided. Before any
    batch, the wall-clock day is the only clock there is.
    """
    if latest_completed is None:
        return now.astimezone(UTC).date()
    return latest_completed + timedelta(days=1)


def plan_override(
    request: OverrideRequest,
    current_tag: str | None,
    first_day: date,
    policy: OverridePolicy,
    now: datetime,
) -> PlannedOverride:
    """The override row for ``request``, or a ValueError that names what is wrong.

    Args:
        request: the CS user's request.
        current_tag: the learner's stored tag; None when the store does not know them.
        first_day: ``next_batch_day``: the earliest allowed effective day (and the default).
        policy: allowed manual moves and the campaign box.
        now: when it is recorded (``created_at``).
    """
    _check_words(request.actor, request.reason)
    if request.tag is not None and request.tag not in STATUS_TAGS:
        raise ValueError(f"unknown tag {request.tag!r}: expected one of {', '.join(STATUS_TAGS)}")
    if current_tag is None:
        raise ValueError(f"unknown customer {request.customer_id!r}: the store has no status")
    tag = request.tag or current_tag
    kind = CAMPAIGN_KIND if request.tag == MANUAL_ONLY_TAG else HOLD_KIND
    if tag != current_tag and current_tag not in policy.manual_from.get(tag, frozenset()):
        allowed = sorted(policy.manual_from.get(tag, frozenset())) or ["no tag"]
        raise ValueError(
            f"customer {request.customer_id!r} is {current_tag}: a person may move a learner "
            f"into {tag} only from {', '.join(allowed)} (rules/tags.yaml manual_from)"
        )
    effective = _effective_day(request.effective, first_day)
    expires = _expiry(request, effective, kind, policy)
    row = {
        "customer_id": request.customer_id,
        "tag": tag,
        "kind": kind,
        "actor": request.actor.strip(),
        "reason": request.reason.strip(),
        "created_at": now,
        "effective_as_of": effective,
        "expires": expires,
    }
    return PlannedOverride(row=row, from_tag=current_tag, moves=tag != current_tag)


def plan_clear(
    customer_id: str,
    open_override: Mapping[str, Any] | None,
    words: tuple[str, str],
    first_day: date,
    effective: date | None = None,
) -> dict[str, Any]:
    """The values that end ``open_override`` early, or a ValueError naming what is wrong.

    Args:
        customer_id: the learner.
        open_override: their open override (``effective_as_of`` at least), or None.
        words: (actor, reason) of the clear, both quoted in the audit.
        first_day: ``next_batch_day``: the earliest (and default) day it stops applying.
        effective: the first data day it no longer applies to; None for ``first_day``.
    """
    actor, reason = words
    _check_words(actor, reason, what="clearing an override")
    if open_override is None:
        raise ValueError(f"customer {customer_id!r} has no open override to clear")
    day = _effective_day(effective, first_day)
    # An override cleared before it began never applies: its window becomes empty.
    return {
        "cleared_as_of": max(day, open_override["effective_as_of"]),
        "cleared_by": actor.strip(),
        "clear_reason": reason.strip(),
    }


def _check_words(actor: str, reason: str, what: str = "an override") -> None:
    if not actor or not actor.strip():
        raise ValueError(f"{what} needs an actor: who decided it")
    if not reason or not reason.strip():
        raise ValueError(f"{what} needs a reason: the audit log quotes it")


def _effective_day(asked: date | None, first_day: date) -> date:
    if asked is None:
        return first_day
    if asked < first_day:
        raise ValueError(
            f"effective day {asked} is already decided by a completed batch day: an override "
            f"takes effect from {first_day} on"
        )
    return asked


def _expiry(
    request: OverrideRequest, effective: date, kind: str, policy: OverridePolicy
) -> date | None:
    """The first data day the override no longer applies to (None: until cleared)."""
    if request.expires is not None and request.days is not None:
        raise ValueError("give --expires DAY or --for DAYS, not both")
    if request.days is not None and request.days < 1:
        raise ValueError(f"--for {request.days} days: an override lasts at least one day")
    expires = request.expires
    if request.days is not None:
        expires = effective + timedelta(days=request.days)
    if expires is None and kind == CAMPAIGN_KIND:
        expires = effective + timedelta(days=policy.campaign_days)
    if expires is not None and expires <= effective:
        raise ValueError(f"expires {expires} is not after the effective day {effective}")
    if kind == CAMPAIGN_KIND:
        length = (expires - effective).days  # type: ignore[operator]
        if not policy.campaign_min_days <= length <= policy.campaign_max_days:
            raise ValueError(
                f"a retention campaign lasts {policy.campaign_min_days}-"
                f"{policy.campaign_max_days} days (rules/tags.yaml campaign), not {length}"
            )
    return expires


__all__ = [
    "OverridePolicy",
    "OverrideRequest",
    "PlannedOverride",
    "next_batch_day",
    "plan_clear",
    "plan_override",
]
