"""The planner's messages as the store takes them: ids and contexts right by construction.

The store's boundary (``serving.core.outbox.outbox_rows``) holds every planned message to two
facts: its id is the stable ``message_key`` of its (day, learner, campaign, step), and its
context is a JSON object. A frame from anywhere has to be checked for them: every message hashed
again, every context parsed. A :class:`PlannedMessages` can only be made by
:func:`planned_messages`, which computes each id with ``message_keys`` from the very learner,
campaign and step it stores beside it, and writes each context itself as a JSON object of named
fields (:func:`json_objects`); it keeps its frame to itself and hands out copies (pandas
copy-on-write), so nobody changes the frame it was built with. Both facts hold for it by
construction, and ``outbox_rows`` checks everything else (schema, day, dates, channels) as for
any frame. At a million learners that is a million and a half hashes and a million JSON parses a
first day no longer pays twice.

A campaign's cadence steps share their learner's context: :attr:`PlannedMessages.stored` writes
it on the first step of each (learner, campaign) and ``SHARED_CONTEXT`` on the others, which is
how the outbox keeps it (a 1M first load's 1.64M messages are 904k contexts: ~360 MB of text
less to copy, insert and index); :attr:`PlannedMessages.frame` gives every message its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from serving.core.messages import MESSAGE_COLUMNS, SHARED_CONTEXT, message_keys

_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""How a context is written: compact, UTF-8 as it is (the outbox stores text)."""
_TEXT = pd.StringDtype("pyarrow", na_value=np.nan)
"""pandas' default string dtype (``str``): what the frame's text columns hold."""


@dataclass(frozen=True)
class ContextField:
    """One field of every learner's context, coded: learner i's value is ``values[codes[i]]``.

    A field with few distinct values (a tag, a count, the reasons of a shared ``why``) is
    encoded once per value, not once per learner.

    Attributes:
        codes: per learner, a position in ``values``.
        values: the field's distinct values, each one ``json`` can write (None writes null).
    """

    codes: np.ndarray
    values: Sequence[Any]

    @classmethod
    def each(cls, values: Sequence[Any]) -> ContextField:
        """A field whose values are mostly distinct (an id): one value per learner, in order."""
        return cls(np.arange(len(values)), values)


def coded_texts(column: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """A text column as (codes, distinct values): ``str`` of each value, None where missing.

    Returns:
        Per row a position in the values; the values (the last one None, for missing rows).
    """
    codes, distinct = pd.factorize(column, use_na_sentinel=True)
    texts: list[str | None] = [str(value) for value in np.asarray(distinct, dtype=object)]
    return np.where(codes < 0, len(texts), codes), [*texts, None]


def json_objects(
    fields: Mapping[str, ContextField], count: int, rows: np.ndarray | None = None
) -> pa.LargeStringArray:
    """Each of ``count`` learners' fields as one JSON object, keys in the mapping's order: of
    every learner, or of the learners at positions ``rows``, in that order.

    Byte for byte ``json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode`` of
    the learner's dict (the encoder writes an object as "{", its ``"key":value`` pairs joined
    with ",", "}"): each distinct ``"key":value`` piece is written by that encoder once, and
    Arrow joins the pieces of every learner (no dict per learner, no encoder call per learner).

    Raises:
        ValueError: a field without one code per learner.
    """
    size = count if rows is None else len(rows)
    if not fields:
        return pa.array(["{}"] * size, pa.large_string())
    pieces = []
    last = len(fields) - 1
    for position, (key, field) in enumerate(fields.items()):
        if len(field.codes) != count:
            raise ValueError(f"context field {key!r}: {len(field.codes)} codes for {count} rows")
        head = ("{" if position == 0 else "") + _ENCODE(key) + ":"
        tail = "}" if position == last else ""
        written = pa.array(
            [head + _ENCODE(value) + tail for value in field.values], pa.large_string()
        )
        codes = np.asarray(field.codes) if rows is None else np.asarray(field.codes)[rows]
        pieces.append(written.take(pa.array(codes, pa.int64())))
    return pc.binary_join_element_wise(*pieces, pa.scalar(",", pa.large_string()))


@dataclass(frozen=True)
class StepMessages:
    """One cadence step of one campaign for the learners it enrols today.

    Attributes:
        campaign_id: the campaign.
        step: the step's 0-based position in the cadence.
        due_on: the day it falls due (the plan's day + the step's delay).
        template_id: the template the dispatcher renders.
        learners: per message, the learner's position among the plan's learners (its id and
            context).
        channels: per message, its channel.
        variants: per message, the learner's A/B variant ("" for none).
        control: per message, whether the learner is in the control group.
    """

    campaign_id: str
    step: int
    due_on: date
    template_id: str
    learners: np.ndarray
    channels: np.ndarray
    variants: np.ndarray
    control: np.ndarray

    def __post_init__(self) -> None:
        sizes = {len(self.learners), len(self.channels), len(self.variants), len(self.control)}
        if len(sizes) != 1:
            raise ValueError(f"{self.campaign_id} step {self.step}: columns of unequal length")
        if np.asarray(self.control).dtype != np.bool_:  # bool("false") is True: never coerced
            raise ValueError(f"{self.campaign_id} step {self.step}: control flags are not bools")


class PlannedMessages:
    """A day's planned messages whose ids are ``message_key`` and whose contexts are JSON
    objects, by construction: made by :func:`planned_messages` only (see the module docstring).
    """

    __slots__ = ("_frame", "_holders")
    _frame: pd.DataFrame  # contexts as stored: SHARED_CONTEXT but on each group's first step
    _holders: np.ndarray  # per message, the row holding its context

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("PlannedMessages are made by serving.core.planned.planned_messages only")

    @classmethod
    def _built(cls, frame: pd.DataFrame, holders: np.ndarray) -> PlannedMessages:
        planned = object.__new__(cls)
        object.__setattr__(planned, "_frame", frame)
        object.__setattr__(planned, "_holders", holders)
        return planned

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"PlannedMessages are read-only (tried to set {name!r})")

    def __reduce__(self) -> tuple[Any, tuple[pd.DataFrame, np.ndarray]]:
        return PlannedMessages._built, (self._frame, self._holders)

    def __len__(self) -> int:
        return len(self._frame)

    @property
    def frame(self) -> pd.DataFrame:
        """The messages, exactly ``MESSAGE_COLUMNS``, each with its own context: a copy
        (copy-on-write: no data copied until someone writes to it, and what they write stays
        in their copy)."""
        stored = self._frame["context"].array
        own = pa.array(stored).take(pa.array(self._holders, pa.int64()))
        return self._frame.assign(context=pd.array(own, dtype=_TEXT))

    @property
    def stored(self) -> pd.DataFrame:
        """The messages as the outbox keeps them: a group's context on its first step only,
        ``SHARED_CONTEXT`` on the others (``serving.core.messages``); a copy, as ``frame``."""
        return self._frame.copy(deep=False)


def planned_messages(
    as_of: date,
    customer_ids: Sequence[str],
    contexts: Mapping[str, ContextField],
    steps: Sequence[StepMessages],
) -> PlannedMessages:
    """The messages of ``steps``, planned on ``as_of``, in the order of ``steps``.

    Args:
        as_of: the plan's day (every message's ``planned_on``).
        customer_ids: the plan's learners (the steps' ``learners`` are positions in it).
        contexts: the learners' context fields, in the order the JSON writes them.
        steps: the messages, one block per (campaign, step).

    Raises:
        ValueError: steps or fields that do not line up with the learners.
    """
    ids = np.asarray(customer_ids, dtype=object)
    learners = np.concatenate([step.learners for step in steps]) if steps else np.array([], int)
    if len(learners) and (learners.min() < 0 or learners.max() >= len(ids)):
        raise ValueError("planned messages: a step names a learner the plan does not have")
    texts, holders = _contexts(steps, contexts, len(ids))
    customers = [ids[step.learners] for step in steps]
    keys = [
        key
        for step, mine in zip(steps, customers, strict=True)
        for key in message_keys(as_of, mine, step.campaign_id, step.step)
    ]
    frame = pd.DataFrame(
        {
            "message_id": _text(keys),
            "planned_on": np.full(len(learners), as_of, dtype=object),
            "due_on": _each_step(steps, lambda step: step.due_on, object),
            "customer_id": _text(np.concatenate(customers) if steps else []),
            "campaign_id": _text(_each_step(steps, lambda step: step.campaign_id, object)),
            "step": _each_step(steps, lambda step: step.step, np.int64),
            "channel": _text(_joined(steps, "channels")),
            "template_id": _text(_each_step(steps, lambda step: step.template_id, object)),
            "variant": _text(_joined(steps, "variants")),
            "control": _joined(steps, "control").astype(bool),
            "context": pd.array(texts, dtype=_TEXT),
        },
        copy=False,
    )
    return PlannedMessages._built(frame[list(MESSAGE_COLUMNS)], holders)


def _contexts(
    steps: Sequence[StepMessages], contexts: Mapping[str, ContextField], count: int
) -> tuple[pa.LargeStringArray, np.ndarray]:
    """Each message's context as stored, and the message holding it.

    A campaign's steps name the same learners (a run of steps): their JSON is written once,
    on the run's first step, and its other steps hold ``SHARED_CONTEXT``. Copying each step's
    contexts end to end instead cost a 1M first load ~3 s, for 807 MB of text that the outbox
    then inserted and indexed twice over.

    Returns:
        The contexts, one per message in the order of ``steps``; per message, the position of
        the message holding its context (its own on a run's first step).
    """
    runs: list[np.ndarray] = []
    sources: list[int | None] = []  # per step: where its run's texts start, or None
    holders: list[np.ndarray] = []
    written = first = at = 0  # texts so far; message positions: the run's first step, this step
    for step in steps:
        size = len(step.learners)
        if not runs or not np.array_equal(runs[-1], step.learners):
            sources.append(written)
            runs.append(step.learners)
            written += size
            first = at
        else:
            sources.append(None)
        holders.append(np.arange(first, first + size))
        at += size
    if not steps:
        return pa.array([], pa.large_string()), np.array([], np.int64)
    texts = json_objects(contexts, count, np.concatenate(runs))
    shared = pa.scalar(SHARED_CONTEXT, pa.large_string())
    pieces = [
        pa.repeat(shared, len(step.learners))
        if source is None
        else texts.slice(source, len(step.learners))
        for step, source in zip(steps, sources, strict=True)
    ]
    return pa.concat_arrays(pieces), np.concatenate(holders)


def _each_step(steps: Sequence[StepMessages], value: Any, dtype: Any) -> np.ndarray:
    """One value per step, repeated for each of its messages."""
    sizes = [len(step.learners) for step in steps]
    return np.repeat(np.array([value(step) for step in steps], dtype=dtype), sizes)


def _joined(steps: Sequence[StepMessages], name: str) -> np.ndarray:
    """A per-message column of the steps, end to end."""
    if not steps:
        return np.array([], dtype=object)
    return np.concatenate([np.asarray(getattr(step, name)) for step in steps])


def _text(values: Any) -> pd.api.extensions.ExtensionArray:
    """Strings as pandas' ``str`` column, built by Arrow from the values in one go."""
    return pd.array(pa.array(values, pa.large_string()), dtype=_TEXT)


__all__ = [
    "ContextField",
    "PlannedMessages",
    "StepMessages",
    "coded_texts",
    "json_objects",
    "planned_messages",
]
