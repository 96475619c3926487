"""Features of learners on demand: from the event store by id, or from events sent inline.

``LearnerData`` is the event store the online path reads (``LSTEP_DATA_DIR``: ``customers.parquet``
and ``events.parquet``, through their memory-mapped indexes ``serving.infra.customer_index`` and
``serving.infra.event_index``: a process maps them instead of loading millions of learners).
``day_features`` assembles the features of a group of ``LearnerAsk``s of one day with the online
feature code (``features.online``: numpy over one learner's sorted events, proven equal to the batch
job's ``build_features``): by id from the learner's stored events, read through the index; inline
from the events in the ask merged with the learner's stored ones (exact repeats dropped), after the
file contracts are checked on the plain values. A learner that cannot have features gets a
``Problem`` of their own (unknown: ``NotFound``; enrolled after the day or data that breaks the
contracts: ``Invalid``; too many events: ``TooLarge``) instead of failing the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from features.online import features_frame
from features.online_inputs import (
    Customer,
    LearnerEvents,
    TypeAvailability,
    channel_code,
    instant_us,
    type_code,
)
from features.schemas import CUSTOMERS_FILE, EARLIEST_INSTANT, EVENTS_FILE
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS, PRODUCT_TAGS
from serving.core.asks import LearnerAsk
from serving.core.problems import Invalid, NotFound, Problem, TooLarge
from serving.infra.customer_index import CustomerIndex
from serving.infra.event_index import EventIndex

logger = logging.getLogger("bentoml.lstep")

RECHECK_S = 60.0
"""How often, at most, the event store's files are checked for a newer version."""
EVENT_STORE, INLINE = "event_store", "inline"
"""Where a learner's features came from (``feature_source`` in the API)."""
MAX_INLINE_EVENTS = 20_000
"""Most inline events of one learner (the API's own limit per learner is the same)."""
_EVENT_TYPES = frozenset(CANONICAL_EVENT_TYPES)
_EARLIEST = EARLIEST_INSTANT.to_pydatetime()
INDEX_DIR = ".event-index"
"""The indexes' sidecars, inside the data directory (elsewhere when it is read-only)."""
NO_TYPES = TypeAvailability({}, {})
"""The availability of event types without a log: none appeared."""
IndexT = TypeVar("IndexT")


@dataclass
class LearnerData:
    """The stored customers and event log the online path computes features from.

    Attributes:
        data_dir: holds ``events.parquet`` and ``customers.parquet``.
        customers: the stored customers by id.
        index: the stored events by learner (None without an events file).
        max_events: most inline events of one learner.
    """

    data_dir: Path
    customers: CustomerIndex = field(default_factory=CustomerIndex.empty)
    index: EventIndex | None = None
    max_events: int = MAX_INLINE_EVENTS
    _stamp: tuple[float, ...] = field(default=(), repr=False)
    _checked_at: float = field(default=0.0, repr=False)

    @classmethod
    def open(cls, data_dir: Path, *, max_events: int = MAX_INLINE_EVENTS) -> LearnerData:
        """Map the customers' and the log's indexes (built when missing or stale).

        A missing directory means no learners.

        Raises:
            ValueError: when ``customers.parquet`` breaks the customer contract.
        """
        data = cls(data_dir=data_dir, max_events=max_events)
        data._load()
        return data

    @property
    def events_path(self) -> Path:
        return self.data_dir / EVENTS_FILE

    @property
    def availability(self) -> TypeAvailability:
        """When each event type first appeared in the stored log: every learner's features take
        the availability of event types from it, as the batch job's features do."""
        return NO_TYPES if self.index is None else self.index.availability

    def refresh(self) -> None:
        """Re-read the files when they changed (checked at most every ``RECHECK_S`` seconds).

        The batch job's data arrives daily: new learners must become known to a long-running
        service without a restart.
        """
        if time.monotonic() - self._checked_at < RECHECK_S:
            return
        if self._file_stamp() != self._stamp:
            self._load()
        self._checked_at = time.monotonic()

    def customer(self, customer_id: str) -> Customer | None:
        """The stored customer record of a learner, or None for a learner the store lacks."""
        return self.customers.customer(customer_id)

    def stored_events(self, customer_id: str) -> LearnerEvents:
        """The learner's stored events, sorted by time (read through the index)."""
        return LearnerEvents.empty() if self.index is None else self.index.events_of(customer_id)

    def computed_rows(self, ids: Sequence[str], as_of: date) -> pd.DataFrame:
        """Features of stored learners ``ids`` at ``as_of`` from their stored events.

        Raises:
            KeyError: a learner the store does not hold.
        """
        learners = []
        for customer_id in ids:
            customer = self.customer(customer_id)
            if customer is None:
                raise KeyError(f"unknown learner {customer_id!r}: not in the event store")
            learners.append((customer, self.stored_events(customer_id)))
        return features_frame(learners, as_of, self.availability)

    def _load(self) -> None:
        self._stamp = self._file_stamp()
        index_root = self.data_dir / INDEX_DIR
        customers_path = self.data_dir / CUSTOMERS_FILE
        if customers_path.exists():
            self.customers = _writable(CustomerIndex.open, customers_path, index_root / "customers")
        else:
            logger.warning("no %s: only learners with inline events can be scored", customers_path)
            self.customers = CustomerIndex.empty()
        exists = self.events_path.exists()
        self.index = _writable(EventIndex.open, self.events_path, index_root) if exists else None
        self._checked_at = time.monotonic()

    def _file_stamp(self) -> tuple[float, ...]:
        paths = (self.data_dir / CUSTOMERS_FILE, self.events_path)
        return tuple(path.stat().st_mtime if path.exists() else -1.0 for path in paths)


def _writable(open_index: Callable[[Path, Path], IndexT], source: Path, index_root: Path) -> IndexT:
    """``source``'s index in ``index_root``, or in the temporary directory when that is
    read-only."""
    try:
        return open_index(source, index_root)
    except OSError as error:  # read-only (EROFS, EACCES): the index goes to tmp
        digest = hashlib.sha256(str(index_root.resolve()).encode()).hexdigest()[:16]
        fallback = Path(tempfile.gettempdir()) / "lstep-event-index" / digest
        logger.warning("cannot write the index in %s (%s); using %s", index_root, error, fallback)
        return open_index(source, fallback)


@dataclass
class DayFeatures:
    """Features of a group of learners on one day, and the learners that could not have any.

    Attributes:
        frame: one row per learner that has features.
        sources: customer_id -> where the row came from (``event_store``, ``inline``, or a
            caller's own source such as ``snapshot``).
        problems: customer_id -> why that learner has no row.
        unstored: learners whose customer record came with the ask and who are not in the
            event store's customers (the daily batch cannot read them).
    """

    frame: pd.DataFrame
    sources: dict[str, str] = field(default_factory=dict)
    problems: dict[str, Problem] = field(default_factory=dict)
    unstored: frozenset[str] = frozenset()

    @classmethod
    def of(cls, frame: pd.DataFrame | None, source: str) -> DayFeatures:
        """Rows all from one source."""
        if frame is None or frame.empty:
            return cls(frame=_NO_ROWS)
        return cls(frame=frame, sources=dict.fromkeys(frame["customer_id"], source))

    def merged(self, other: DayFeatures) -> DayFeatures:
        """The rows, sources and problems of both (disjoint learners)."""
        frames = [frame for frame in (self.frame, other.frame) if len(frame)]
        if len(frames) == 2:
            frame = pd.concat(frames, ignore_index=True)
        else:  # one learner's frame is not copied: the hot path of /score
            frame = frames[0] if frames else _NO_ROWS
        return DayFeatures(
            frame=frame,
            sources={**self.sources, **other.sources},
            problems={**self.problems, **other.problems},
            unstored=self.unstored | other.unstored,
        )


_NO_ROWS = pd.DataFrame()
"""The frame of a group without rows (shared, never modified)."""


def day_features(asks: Sequence[LearnerAsk], data: LearnerData) -> DayFeatures:
    """Features of ``asks`` (one day, unique learners): by id from the event store, or inline.

    Raises:
        ValueError: asks of several days.
    """
    days = {ask.as_of for ask in asks}
    if len(days) > 1:
        raise ValueError(f"day_features: asks of {len(days)} days; assemble one day at a time")
    problems: dict[str, Problem] = {}
    by_id = [ask for ask in asks if not ask.inline]
    stored = _known_enrolled(by_id, data, problems)
    computed = DayFeatures.of(
        data.computed_rows([ask.customer_id for ask in stored], stored[0].as_of)
        if stored
        else None,
        EVENT_STORE,
    )
    inline = inline_features([ask for ask in asks if ask.inline], data, problems)
    return computed.merged(inline).merged(DayFeatures(_NO_ROWS, problems=problems))


def _known_enrolled(
    asks: Sequence[LearnerAsk], data: LearnerData, problems: dict[str, Problem]
) -> list[LearnerAsk]:
    """The asks of learners the store knows and who enrolled before the day; problems for others."""
    known = []
    for ask in asks:
        customer = data.customer(ask.customer_id)
        if customer is None:
            problems[ask.customer_id] = NotFound(
                f"unknown learner {ask.customer_id!r}: not in the event store"
            )
        elif _enrolled_before(ask, _enrolled_at(customer), problems):
            known.append(ask)
    return known


def _enrolled_before(ask: LearnerAsk, enrolled_at: Any, problems: dict[str, Problem]) -> bool:
    """Whether the learner enrolled before the ask's day; an ``Invalid`` for them when not."""
    if pd.Timestamp(enrolled_at) < pd.Timestamp(ask.as_of, tz=UTC):
        return True
    problems[ask.customer_id] = Invalid(
        f"learner {ask.customer_id!r} enrolled at {enrolled_at}, not before as_of {ask.as_of}"
    )
    return False


def inline_features(
    asks: Sequence[LearnerAsk], data: LearnerData, problems: dict[str, Problem]
) -> DayFeatures:
    """Features from the events in the asks merged with the learners' stored events.

    Each learner's events and customer record are checked against the file contracts first (on
    the plain values); a learner whose data breaks them gets a problem naming each field.
    """
    learners: list[tuple[Customer, LearnerEvents]] = []
    for ask in asks:
        checked = _checked_inline(ask, data, problems)
        if checked is not None:
            customer, events = checked
            learners.append((customer, data.stored_events(ask.customer_id).merged(events)))
    if not learners:
        return DayFeatures(_NO_ROWS)
    frame = features_frame(learners, asks[0].as_of, data.availability)
    unstored = {c.customer_id for c, _ in learners if c.customer_id not in data.customers}
    return dataclasses.replace(DayFeatures.of(frame, INLINE), unstored=frozenset(unstored))


def _checked_inline(
    ask: LearnerAsk, data: LearnerData, problems: dict[str, Problem]
) -> tuple[Customer, LearnerEvents] | None:
    """The ask's customer record and events when they keep the contracts; else a problem."""
    events = ask.events or ()
    if len(events) > data.max_events:
        problems[ask.customer_id] = TooLarge(
            f"learner {ask.customer_id!r}: events: {len(events)} inline events, more than the "
            f"{data.max_events} one learner may send"
        )
        return None
    customer = _customer_of(ask, data, problems)
    if customer is None:
        return None
    found = _customer_problems(ask)
    instants = _event_problems(ask, customer, found)
    if found:
        problems[ask.customer_id] = Invalid(f"learner {ask.customer_id!r}: " + "; ".join(found))
        return None
    if not _enrolled_before(ask, _enrolled_at(customer), problems):
        return None
    return customer, LearnerEvents.of_columns(
        instants,
        [type_code(event["event_type"]) for event in events],
        [math.nan if event.get("duration_s") is None else event["duration_s"] for event in events],
        [channel_code(event.get("channel")) for event in events],
        [event.get("item") for event in events],
    )


def _customer_of(
    ask: LearnerAsk, data: LearnerData, problems: dict[str, Problem]
) -> Customer | None:
    """The learner's customer record: from the ask, else from the event store."""
    if ask.customer is not None:
        record = ask.customer
        enrolled = _instant(record.get("enrolled_at"))
        mrr = record.get("mrr")
        return Customer(
            customer_id=ask.customer_id,
            product_tag=str(record.get("product_tag")),
            enrolled_us=instant_us(enrolled) if enrolled is not None else 0,
            mrr=math.nan if mrr is None or not _is_number(mrr) else float(mrr),
        )
    stored = data.customer(ask.customer_id)
    if stored is None:
        problems[ask.customer_id] = NotFound(
            f"unknown learner {ask.customer_id!r}: not in the event store; send their "
            "customer record (product_tag, enrolled_at, mrr) with the events"
        )
    return stored


def _customer_problems(ask: LearnerAsk) -> list[str]:
    """What breaks the customer contract in the record sent with the ask (none: stored)."""
    if ask.customer is None:
        return []
    record, found = ask.customer, []
    if record.get("product_tag") not in PRODUCT_TAGS:
        found.append(
            f"customer.product_tag: {record.get('product_tag')!r} is not one of "
            f"{', '.join(PRODUCT_TAGS)}"
        )
    enrolled_at = record.get("enrolled_at")
    found += _instant_problems("customer.enrolled_at", enrolled_at, _instant(enrolled_at), ask.now)
    found += _quantity_problems("customer.mrr", record.get("mrr"))
    return found


def _event_problems(ask: LearnerAsk, customer: Customer, found: list[str]) -> list[int]:
    """Add to ``found`` what breaks the event contract, per event and field
    (``events[3].duration_s: -5 is negative``); return the events' instants (microseconds)."""
    instants = []
    for position, event in enumerate(ask.events or ()):
        where = f"events[{position}]"
        if type(event) is not dict and not isinstance(event, Mapping):  # dict: skip the ABC
            found.append(f"{where}: {event!r} is not an event")
            continue
        ts = _instant(event.get("ts"))
        found += _instant_problems(f"{where}.ts", event.get("ts"), ts, ask.now)
        if ts is not None:
            instants.append(instant_us(ts))
            if instants[-1] < customer.enrolled_us:
                enrolled = pd.Timestamp(customer.enrolled_us, unit="us", tz=UTC)
                found.append(f"{where}.ts: {ts} is before the learner's enrolled_at {enrolled}")
        if event.get("event_type") not in _EVENT_TYPES:
            found.append(
                f"{where}.event_type: {event.get('event_type')!r} is not a known event type "
                f"({', '.join(CANONICAL_EVENT_TYPES)})"
            )
        if event.get("duration_s") is not None:
            found += _quantity_problems(f"{where}.duration_s", event.get("duration_s"))
        if event.get("channel") is not None and event.get("channel") not in CHANNELS:
            found.append(
                f"{where}.channel: {event.get('channel')!r} is not one of {', '.join(CHANNELS)}"
            )
        if event.get("item") is not None and not isinstance(event.get("item"), str):
            found.append(f"{where}.item: {event.get('item')!r} is not text")
    return instants


def _instant_problems(name: str, value: Any, moment: datetime | None, now: datetime) -> list[str]:
    """A timestamp of the contracts: an instant, not before 2000, not after ``now``."""
    if moment is None:
        return [f"{name}: {value!r} is not a timestamp"]
    if moment < _EARLIEST:
        return [f"{name} before {_EARLIEST.date()}: {moment} is not a date of a course log"]
    if moment > now:
        return [f"{name}: {moment} is in the future (now is {now.astimezone(UTC)})"]
    return []


def _quantity_problems(name: str, value: Any) -> list[str]:
    """A nullable non-negative finite number of the contracts."""
    if value is None:
        return []
    if not _is_number(value):
        return [f"{name}: {value!r} is not a number"]
    if not math.isfinite(value):
        return [f"{name}: {value!r} is not a finite number"]
    if value < 0:
        return [f"{name}: {value:g} is negative"]
    return []


def _is_number(value: Any) -> bool:
    if type(value) is float:
        return True
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _instant(value: Any) -> datetime | None:
    """A timestamp in UTC (naive means UTC, as in the files), or None when it is not one."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, pd.Timestamp):
        value = None if pd.isna(value) else value.to_pydatetime()
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enrolled_at(customer: Customer) -> pd.Timestamp:
    return pd.Timestamp(customer.enrolled_us, unit="us", tz=UTC)


__all__ = [
    "EVENT_STORE",
    "INLINE",
    "MAX_INLINE_EVENTS",
    "DayFeatures",
    "LearnerData",
    "day_features",
    "inline_features",
]
