"""The outbox's rules, pure: which planned messages a day writes, and when a message may go.

The planner (``serving.core.campaigns``) gives its messages (``PlannedMessages``, or any frame of
``MESSAGE_COLUMNS``) and the pairs to cancel; ``outbox_rows`` checks them against the day and
turns them into outbox rows (control rows ``suppressed``, the rest ``pending``). The dispatcher
(``serving.app.dispatch``) asks ``quiet_until``, ``retry_at`` and ``cap_until`` when a message
may be (re)tried; every instant is passed in, none is read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serving.core.frames import validate_frame
from serving.core.messages import (
    CHANNELS,
    MESSAGE_COLUMNS,
    PENDING,
    SHARED_CONTEXT,
    SUPPRESSED,
    message_keys,
)
from serving.core.planned import PlannedMessages

if TYPE_CHECKING:
    import pandera.pandas as pa


@cache
def messages_schema() -> pa.DataFrameSchema:
    """A planned day's messages (``MESSAGE_COLUMNS``), as the outbox takes them (built on first
    use: pandera is imported by the batch that plans messages, not by every store reader)."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "message_id": pa.Column(str, unique=True),
            "planned_on": pa.Column("datetime64[us]"),
            "due_on": pa.Column("datetime64[us]"),
            "customer_id": pa.Column(str),
            "campaign_id": pa.Column(str),
            "step": pa.Column(int, pa.Check.ge(0)),
            "channel": pa.Column(str, pa.Check.isin(list(CHANNELS))),
            "template_id": pa.Column(str),
            "variant": pa.Column(str),
            "control": pa.Column(bool),
            "context": pa.Column(str),
        },
        name="campaign messages",
        strict=True,
        coerce=True,
        ordered=False,
    )


def empty_messages() -> pd.DataFrame:
    """A messages frame without rows."""
    return pd.DataFrame({name: pd.Series(dtype=object) for name in MESSAGE_COLUMNS})


def outbox_rows(
    as_of: date, messages: pd.DataFrame | PlannedMessages, run_id: str, now: datetime
) -> pd.DataFrame:
    """The outbox rows of a day's planned messages: control rows suppressed, the rest pending.

    Every message is checked as below. The planner's ``PlannedMessages`` have their ids and
    contexts right by construction (``serving.core.planned``): for them those two are not
    worked out again (a hash per message, a JSON parse per context), and their rows carry each
    (learner, campaign)'s context once (``SHARED_CONTEXT`` on its other steps), as the outbox
    keeps it; a plain frame has them checked like the rest.

    Raises:
        ValueError: a column missing or mistyped, an unknown channel, a repeated id, a message
            planned on another day, due before it was planned, or (a plain frame) whose id is
            not the stable ``message_key`` of its (day, learner, campaign, step) or whose
            context is not a JSON object, naming rows and values.
    """
    planned = isinstance(messages, PlannedMessages)
    frame = _checked(as_of, messages.stored if planned else messages)
    if not planned:
        _refuse(
            frame, frame["message_id"] != _keys(frame), "have an id other than message_key(...)"
        )
        bad_context = frame["context"].isin(_not_json_objects(frame["context"]))
        _refuse(frame, bad_context, "have a context that is not a JSON object")
    for column in ("planned_on", "due_on"):
        frame[column] = _days(frame[column])
    frame["state"] = frame["control"].map({True: SUPPRESSED, False: PENDING})
    frame["tries"] = 0
    frame["run_id"] = run_id
    frame["created_at"] = now
    return frame


CONTEXT_GROUP = ["customer_id", "campaign_id", "planned_on"]
"""The messages sharing one context (``SHARED_CONTEXT``): one day's for a learner and campaign."""


def own_contexts(rows: pd.DataFrame, holders: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each ``SHARED_CONTEXT`` replaced by its group's context in ``holders``
    (``CONTEXT_GROUP``); ``SHARED_CONTEXT`` still where ``holders`` lack the group.

    What a replaced day needs when it leaves out messages already sent (a left-out message
    may be the one holding its group's context), and what the store's reads start from.
    """
    shared = (rows["context"] == SHARED_CONTEXT).to_numpy()
    if not shared.any():
        return rows
    held = holders.loc[holders["context"] != SHARED_CONTEXT, [*CONTEXT_GROUP, "context"]]
    held = held.drop_duplicates(CONTEXT_GROUP)
    found = rows.loc[shared, CONTEXT_GROUP].merge(held, on=CONTEXT_GROUP, how="left")["context"]
    filled = rows["context"].copy()
    filled[shared] = found.fillna(SHARED_CONTEXT).to_numpy(object)
    return rows.assign(context=filled)


def _checked(as_of: date, messages: pd.DataFrame) -> pd.DataFrame:
    """The messages validated (``messages_schema``), planned on ``as_of``, due on or after."""
    control = messages.get("control")
    # Coercion would read any text, "false" too, as True; a numpy bool column holds only bools.
    if control is not None and control.dtype != np.bool_:
        not_bool = ~control.map(lambda value: isinstance(value, bool | np.bool_))
        _refuse(messages, not_bool, "have a control flag that is not true or false")
    frame = validate_frame(messages, messages_schema())[list(MESSAGE_COLUMNS)].copy()
    day = pd.Timestamp(as_of)
    _refuse(frame, frame["planned_on"] != day, f"are planned on another day than {as_of}")
    _refuse(frame, frame["due_on"] < frame["planned_on"], "are due before they were planned")
    return frame


def _keys(frame: pd.DataFrame) -> np.ndarray:
    """``message_key`` of each row's (day, learner, campaign, step): ``message_keys`` per
    (day, campaign, step) block, put back in the rows' order."""
    keys = np.empty(len(frame), dtype=object)
    blocks = frame.groupby(["planned_on", "campaign_id", "step"], sort=False).indices
    customers = frame["customer_id"].to_numpy(object)
    for (planned, campaign, step), rows in blocks.items():
        keys[rows] = message_keys(planned.date(), customers[rows], campaign, int(step))
    return keys


def _days(column: pd.Series) -> pd.Series:
    """Midnights as ``datetime.date`` objects, each distinct day converted once."""
    codes, days = pd.factorize(column, use_na_sentinel=False)
    dates = np.asarray([day.date() for day in days], dtype=object)
    return pd.Series(dates[codes], index=column.index, dtype=object)


def _refuse(frame: pd.DataFrame, mask: pd.Series, what: str) -> None:
    if mask.any():
        named = frame["message_id"] if "message_id" in frame else frame.index.to_series()
        examples = named[mask].head(5).tolist()
        raise ValueError(f"campaign messages: {int(mask.sum())} {what} (e.g. {examples})")


def _not_json_objects(contexts: pd.Series) -> list[str]:
    """The distinct contexts that are not a JSON object.

    Each distinct text is parsed once: a learner's cadence steps share one context, so a day of
    a million learners parses some 40% fewer texts than it has messages.
    """
    return [text for text in pd.unique(contexts.to_numpy(object)) if not _is_json_object(text)]


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@dataclass(frozen=True)
class QuietHours:
    """A daily UTC window when some channels wait (e.g. 21:00-07:00 for email and push).

    ``start == end`` means no quiet hours.
    """

    start: time
    end: time
    channels: tuple[str, ...]

    def until(self, channel: str, now: datetime) -> datetime | None:
        """When the window that holds ``now`` ends, if ``channel`` must wait; else None."""
        if channel not in self.channels or self.start == self.end:
            return None
        clock = now.timetz().replace(tzinfo=None)
        wraps = self.start > self.end  # e.g. 21:00 -> 07:00 crosses midnight
        if wraps:
            inside = clock >= self.start or clock < self.end
        else:
            inside = self.start <= clock < self.end
        if not inside:
            return None
        end = datetime.combine(now.date(), self.end, tzinfo=now.tzinfo)
        return end if end > now else end + timedelta(days=1)


def retry_at(now: datetime, tries: int, base_s: float, max_s: float) -> datetime:
    """When a message that failed its ``tries``-th attempt is tried again: base x 2^(tries-1)."""
    return now + timedelta(seconds=min(max_s, base_s * 2 ** max(tries - 1, 0)))


def cap_until(sent_at: list[datetime], cap: int, window: timedelta, now: datetime) -> Any:
    """When a learner who was sent ``sent_at`` within ``window`` may get another message.

    Returns:
        None when fewer than ``cap`` were sent in the window before ``now``; else the instant
        the oldest of them leaves it.
    """
    recent = sorted(moment for moment in sent_at if now - window < moment <= now)
    if len(recent) < cap:
        return None
    return recent[len(recent) - cap] + window


__all__ = [
    "CONTEXT_GROUP",
    "QuietHours",
    "cap_until",
    "empty_messages",
    "messages_schema",
    "outbox_rows",
    "own_contexts",
    "retry_at",
]
