"""The campaign message contract: what a batch day plans and the outbox keeps (issue 12).

A campaign (``rules/campaigns.yaml``) that a learner's decision triggers on data day D plans one
message per cadence step, due on D + the step's delay. The batch writes the planned messages to
the outbox table in the same transaction as the day's transitions; ``lstep dispatch`` delivers
the due ones through a sink per channel and records each attempt.

Three parties share these names: the planner (``serving.core.campaigns``, pure), the store
(``serving.infra``: the outbox table, written with the day) and the dispatcher and the
measurement (``serving.app``). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from hashlib import sha256
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from serving.core.planned import PlannedMessages

MESSAGE_COLUMNS: tuple[str, ...] = (
    "message_id",  # str: message_key(...), the outbox id and the sinks' Idempotency-Key
    "planned_on",  # date: the batch day that planned it (the trigger day)
    "due_on",  # date: planned_on + the step's delay; sent once a batch day >= due_on is done
    "customer_id",  # str
    "campaign_id",  # str: CP_01 .. CP_24
    "step",  # int: 0-based position in the campaign's cadence
    "channel",  # str: one of CHANNELS (after personalisation, e.g. mobile-primary -> push)
    "template_id",  # str: the template the dispatcher renders
    "variant",  # str: the A/B variant ("" when the campaign has none)
    "control",  # bool: the learner is in the control group: kept as SUPPRESSED, never sent
    "context",  # str: JSON object of the learner fields the template reads (SHARED_CONTEXT)
)
"""Columns of a planned message, in order (the planner's output, the outbox's input)."""

SHARED_CONTEXT = ""
"""The outbox's context of a message whose context is its group's: the messages one day plans
for one learner and campaign (its cadence steps) have one context, which the outbox keeps on
the group's first step only. Readers of the outbox get every message's own (the store fills
them in); a frame handed to the store carries a JSON object in every row."""

CHANNELS: tuple[str, ...] = ("email", "push", "in_app", "csm_task", "webhook")
"""The channels a campaign step may use."""

PENDING, SENT, FAILED, DEAD, SUPPRESSED, CANCELLED = (
    "pending",
    "sent",
    "failed",
    "dead",
    "suppressed",
    "cancelled",
)
"""Outbox states: pending (to send), sent, failed (an attempt failed; retried), dead (gave up
after the maximum tries), suppressed (control group: recorded, never sent), cancelled (the
learner met the campaign's exit condition before the step was due)."""
MESSAGE_STATES: tuple[str, ...] = (PENDING, SENT, FAILED, DEAD, SUPPRESSED, CANCELLED)

FEEDBACK_KINDS: tuple[str, ...] = ("delivered", "opened", "clicked", "converted")
"""What ``POST /events/campaign`` records per message (once per message and kind)."""


PAIR_COLUMNS = ("customer_id", "campaign_id")
"""A learner and a campaign: how the planner sees the outbox and names what it cancels."""


def no_pairs() -> pd.DataFrame:
    """An empty frame of (learner, campaign) pairs."""
    import pandas as pd  # the module's constants are read without pandas (dispatch, API)

    return pd.DataFrame({name: pd.Series(dtype=object) for name in PAIR_COLUMNS})


@dataclass(frozen=True, init=False)
class CampaignPlan:
    """What a batch day does to the outbox: the planner's output, the store's input.

    Built as ``CampaignPlan(messages, cancels)``.

    Attributes:
        handover: the planned messages as the store takes them: the planner's
            ``PlannedMessages`` (ids and contexts right by construction, ``serving.core.planned``)
            or any frame of exactly ``MESSAGE_COLUMNS`` (checked in full by the store).
        cancels: (customer_id, campaign_id) pairs whose learner met the campaign's exit today:
            their still-sendable messages planned before the day are cancelled. Pairs, not
            message ids: the planner then reads one row per pending pair, not every message.
    """

    handover: pd.DataFrame | PlannedMessages
    cancels: pd.DataFrame

    def __init__(
        self, messages: pd.DataFrame | PlannedMessages, cancels: pd.DataFrame | None = None
    ) -> None:
        object.__setattr__(self, "handover", messages)
        object.__setattr__(self, "cancels", no_pairs() if cancels is None else cancels)

    @property
    def messages(self) -> pd.DataFrame:
        """The planned messages as a frame of ``MESSAGE_COLUMNS`` (the planner's: a copy)."""
        from serving.core.planned import PlannedMessages  # pandas only once a plan exists

        if isinstance(self.handover, PlannedMessages):
            return self.handover.frame
        return self.handover


def message_key(planned_on: date, customer_id: str, campaign_id: str, step: int) -> str:
    """The stable id of a planned message: a rerun of the day plans the same ids (no duplicates).

    Example:
        >>> message_key(date(2026, 6, 1), "C1", "CP_01", 0)
        'msg-20260601-d282b16e2e89e70b3c21'
    """
    return message_keys(planned_on, [customer_id], campaign_id, step)[0]


def message_keys(
    planned_on: date, customer_ids: Iterable[str], campaign_id: str, step: int
) -> list[str]:
    """``message_key`` of each learner's message of one (day, campaign, step): the one
    definition of the id (``message_key`` is this for one learner), hashed in one loop.

    The id leads with its day, then the hash: the outbox's primary key index, in id order,
    grows at its end each day, as a log does, rather than taking the day's messages at random
    places all over itself. At 1M learners (76k messages a day into a 3.1M-row outbox) the
    hash alone dirtied most of that index's ~28k pages every day: the batch's write 5.2-6.4 ->
    4.4-4.9 s (alternated), and a WAL and a checkpoint that stop growing with the outbox.
    Outboxes planned before this form keep their ids (the sinks and the feedback know them);
    a replaced day matches its kept messages by learner, campaign and step, not by id
    (``outbox_sql.without_kept_steps``).

    Example:
        >>> message_keys(date(2026, 6, 1), ["C1", "C2"], "CP_01", 0)[0]
        'msg-20260601-d282b16e2e89e70b3c21'
    """
    head, tail = f"{planned_on.isoformat()}|", f"|{campaign_id}|{step}"
    prefix = f"msg-{planned_on:%Y%m%d}-"
    return [prefix + sha256(f"{head}{c}{tail}".encode()).hexdigest()[:20] for c in customer_ids]


__all__ = [
    "CANCELLED",
    "CHANNELS",
    "DEAD",
    "FAILED",
    "FEEDBACK_KINDS",
    "MESSAGE_COLUMNS",
    "MESSAGE_STATES",
    "PENDING",
    "SENT",
    "SUPPRESSED",
    "CampaignPlan",
    "message_key",
    "message_keys",
]
