"""One learner's inputs to the online features: their sorted events, their customer record and
the event types' availability, as plain arrays (``features.online`` computes the features).

Event types and channels are coded as small integers (positions in the vocabulary); instants are
int64 microseconds since the epoch. ``events_by_learner`` and ``customers_by_id`` split contract
frames into these inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import FeatureCatalog, FeatureSpec
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS

EVENT_TYPES: tuple[str, ...] = CANONICAL_EVENT_TYPES
"""Event type codes are positions in this tuple; any other type (``other``) gets ``OTHER_CODE``."""
OTHER_CODE = len(EVENT_TYPES)
_TYPE_CODES = {name: code for code, name in enumerate(EVENT_TYPES)}
(SESSION, LESSON, MILESTONE, QUIZ_ATTEMPT, QUIZ_PASS, FEATURE, POST, REPLY, VIDEO, CANCEL) = (
    _TYPE_CODES[name]
    for name in (
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
)
MOBILE = CHANNELS.index("mobile")
NO_CHANNEL = -1
"""Channel codes are positions in ``CHANNELS``; null is -1, an unknown channel len(CHANNELS)."""


def type_code(event_type: str) -> int:
    """The code of an event type (``OTHER_CODE`` for one outside the canonical vocabulary)."""
    return _TYPE_CODES.get(event_type, OTHER_CODE)


def channel_code(channel: str | None) -> int:
    """The code of a channel: its position in ``CHANNELS``, -1 for null."""
    if channel is None:
        return NO_CHANNEL
    return CHANNELS.index(channel) if channel in CHANNELS else len(CHANNELS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def instant_us(moment: datetime | date | pd.Timestamp) -> int:
    """Microseconds since the epoch of an instant (naive means UTC) or of a day's midnight UTC."""
    if type(moment) is datetime:  # the common case, in plain Python: ~1 us, not ~10
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _ONE_US
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return int(stamp.as_unit("us").asm8.view("int64"))


# --- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LearnerEvents:
    """One learner's events sorted by time, as columns.

    Attributes:
        ts_us: instants, int64 microseconds since the epoch (UTC), non-decreasing.
        type_code: ``type_code`` of each event_type (int8).
        duration_s: float64, NaN where null.
        channel_code: ``channel_code`` of each channel (int8, -1 where null).
        item: the items (object array, None where null).
    """

    ts_us: np.ndarray
    type_code: np.ndarray
    duration_s: np.ndarray
    channel_code: np.ndarray
    item: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_us)

    @classmethod
    def empty(cls) -> LearnerEvents:
        """A learner without events."""
        return cls.of_columns(
            np.empty(0, "int64"), np.empty(0, "int8"), np.empty(0), np.empty(0, "int8"), []
        )

    @classmethod
    def of_columns(
        cls,
        ts_us: Any,
        type_code: Any,
        duration_s: Any,
        channel_code: Any,
        item: Any,
    ) -> LearnerEvents:
        """Events from columns in any order (sorted by time here; ties keep their order)."""
        ts = np.asarray(ts_us, dtype="int64")
        items = np.empty(len(ts), dtype=object)
        items[:] = list(item)
        columns = (
            ts,
            np.asarray(type_code, dtype="int8"),
            np.asarray(duration_s, dtype="float64"),
            np.asarray(channel_code, dtype="int8"),
            items,
        )
        if len(ts) > 1 and np.any(ts[1:] < ts[:-1]):
            order = np.argsort(ts, kind="stable")
            columns = tuple(column[order] for column in columns)
        return cls(*columns)

    @classmethod
    def of_records(cls, records: Iterable[Mapping[str, Any]]) -> LearnerEvents:
        """Events from dicts with the contract columns (``ts`` an instant, naive meaning UTC)."""
        rows = list(records)
        return cls.of_columns(
            [instant_us(row["ts"]) for row in rows],
            [type_code(row["event_type"]) for row in rows],
            [np.nan if row.get("duration_s") is None else row["duration_s"] for row in rows],
            [channel_code(row.get("channel")) for row in rows],
            [row.get("item") for row in rows],
        )

    def keys(self) -> list[tuple[Any, ...]]:
        """Each event as a hashable tuple: two events are exact duplicates when equal."""
        durations = [None if d != d else d for d in self.duration_s.tolist()]  # NaN != NaN
        return list(
            zip(
                self.ts_us.tolist(),
                self.type_code.tolist(),
                durations,
                self.channel_code.tolist(),
                self.item.tolist(),
                strict=True,
            )
        )

    def take(self, rows: np.ndarray | slice) -> LearnerEvents:
        """The events at ``rows`` (a slice or sorted positions)."""
        return LearnerEvents(
            self.ts_us[rows],
            self.type_code[rows],
            self.duration_s[rows],
            self.channel_code[rows],
            self.item[rows],
        )

    def merged(self, other: LearnerEvents) -> LearnerEvents:
        """These events plus those of ``other`` that are not exact duplicates of one already in.

        These events are kept as they are (the stored log is the batch job's input: duplicates
        in it count there too); only ``other``'s repeats are dropped.
        """
        if len(other) == 0:
            return self
        # only stored events within the added ones' time span can repeat one of them
        low = int(np.searchsorted(self.ts_us, other.ts_us.min(), side="left"))
        high = int(np.searchsorted(self.ts_us, other.ts_us.max(), side="right"))
        seen = set(self.take(slice(low, high)).keys())
        fresh = []
        for position, key in enumerate(other.keys()):
            if key not in seen:
                seen.add(key)
                fresh.append(position)
        if not fresh:
            return self
        added = other.take(np.asarray(fresh, dtype="int64"))
        return LearnerEvents.of_columns(
            np.concatenate([self.ts_us, added.ts_us]),
            np.concatenate([self.type_code, added.type_code]),
            np.concatenate([self.duration_s, added.duration_s]),
            np.concatenate([self.channel_code, added.channel_code]),
            np.concatenate([self.item, added.item]),
        )


@dataclass(frozen=True)
class Customer:
    """A learner's customer record (``mrr`` NaN when unknown)."""

    customer_id: str
    product_tag: str
    enrolled_us: int
    mrr: float


@dataclass(frozen=True)
class TypeAvailability:
    """When each event type (and a timed event of it) first appeared in the whole log.

    A feature whose ``needs`` never appeared before ``as_of`` is null (numbers) or false (flags):
    a log without lessons says nothing about lessons (catalog: ``needs``, ``needs_duration``).
    """

    first_us: Mapping[str, int]
    first_timed_us: Mapping[str, int]

    @classmethod
    def of_firsts(cls, firsts: pd.DataFrame) -> TypeAvailability:
        """From ``features.windows.event_type_firsts`` (event_type, first_ts, first_timed_ts)."""
        first, timed = {}, {}
        for row in firsts.itertuples(index=False):
            if not pd.isna(row.first_ts):
                first[str(row.event_type)] = instant_us(row.first_ts)
            if not pd.isna(row.first_timed_ts):
                timed[str(row.event_type)] = instant_us(row.first_timed_ts)
        return cls(first, timed)

    def available(self, as_of_us: int, catalog: FeatureCatalog) -> dict[str, bool]:
        """Per catalog feature, whether the log before ``as_of`` has what it needs."""
        seen = {name for name, first in self.first_us.items() if first < as_of_us}
        timed = {name for name, first in self.first_timed_us.items() if first < as_of_us}
        return {spec.name: _has_needs(spec, seen, timed) for spec in catalog.features}


def _has_needs(spec: FeatureSpec, seen: set[str], timed: set[str]) -> bool:
    """``features.feature_sql._available_condition``, on sets of event types."""
    if spec.needs and not seen.intersection(spec.needs):
        return False
    if spec.needs_duration:
        return bool(timed.intersection(spec.needs)) if spec.needs else bool(timed)
    return True


# --- from frames ---------------------------------------------------------------------------------


def events_by_learner(events: pd.DataFrame) -> dict[str, LearnerEvents]:
    """Split an events frame (contract columns, any order) into each learner's sorted events."""
    ids = events["customer_id"].astype("str").to_numpy()
    ts = _instants_us(events["ts"])
    order = np.lexsort((ts, ids))
    ids, ts = ids[order], ts[order]
    codes = events["event_type"].map(_TYPE_CODES).fillna(OTHER_CODE).to_numpy("int8")[order]
    channels = events["channel"].map({name: c for c, name in enumerate(CHANNELS)})
    channel_codes = channels.fillna(NO_CHANNEL).to_numpy("int8")[order]
    durations = events["duration_s"].to_numpy("float64", na_value=np.nan)[order]
    items = events["item"].astype(object).where(events["item"].notna(), None).to_numpy()[order]
    if not len(ids):
        return {}
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    stops = np.r_[starts[1:], len(ids)]
    return {
        str(ids[start]): LearnerEvents(
            ts[start:stop],
            codes[start:stop],
            durations[start:stop],
            channel_codes[start:stop],
            items[start:stop],
        )
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True)
    }


def customers_by_id(customers: pd.DataFrame) -> dict[str, Customer]:
    """Customer records (contract columns) by customer_id."""
    enrolled = _instants_us(customers["enrolled_at"])
    mrr = customers["mrr"].to_numpy("float64", na_value=np.nan)
    return {
        str(customer_id): Customer(str(customer_id), str(tag), int(enrolled_us), float(value))
        for customer_id, tag, enrolled_us, value in zip(
            customers["customer_id"], customers["product_tag"], enrolled, mrr, strict=True
        )
    }


def _instants_us(column: pd.Series) -> np.ndarray:
    """Instants (tz-aware, or naive meaning UTC) as int64 microseconds since the epoch."""
    moments = pd.to_datetime(column)
    if moments.dt.tz is not None:
        moments = moments.dt.tz_convert("UTC").dt.tz_localize(None)
    return moments.astype("datetime64[us]").to_numpy().view("int64")


__all__ = [
    "EVENT_TYPES",
    "NO_CHANNEL",
    "OTHER_CODE",
    "Customer",
    "LearnerEvents",
    "TypeAvailability",
    "channel_code",
    "customers_by_id",
    "events_by_learner",
    "instant_us",
    "type_code",
]
