"""Features of learners on demand: from the event store by id, or from events sent inline.

``LearnerData`` is the event store the online path reads (``LSTEP_DATA_DIR``: the customers and
``events.parquet``). ``day_features`` assembles the features of a group of ``LearnerAsk``s of one
day with the batch job's feature code (``features.windows.build_features``): by id over the
stored events, inline after checking the events against the file contracts. A learner that
cannot have features gets a ``Problem`` of their own (unknown: ``NotFound``; enrolled after the
day or data that breaks the contracts: ``Invalid``) instead of failing the others.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.schemas import CUSTOMER_COLUMNS, CUSTOMERS_FILE, EVENT_COLUMNS, EVENTS_FILE
from features.validation import load_customers, validate_inputs
from features.windows import build_features, event_type_firsts
from serving.core.asks import LearnerAsk
from serving.core.problems import Invalid, NotFound, Problem

logger = logging.getLogger("bentoml.lstep")

RECHECK_S = 60.0
"""How often, at most, the event store's files are checked for a newer version."""
EVENT_STORE, INLINE = "event_store", "inline"
"""Where a learner's features came from (``feature_source`` in the API)."""


@dataclass
class LearnerData:
    """The stored customers and event log the online path computes features from.

    Attributes:
        data_dir: holds ``events.parquet`` and ``customers.parquet``.
        customers: the stored customers (contract form), indexed by customer_id.
        type_firsts: per event type, its first timestamp in the stored log and its first with a
            duration (``features.windows.event_type_firsts``): inline features take the
            availability of event types from it, as the batch job's features do.
    """

    data_dir: Path
    customers: pd.DataFrame
    type_firsts: pd.DataFrame
    _stamp: tuple[float, ...] = field(default=(), repr=False)
    _checked_at: float = field(default=0.0, repr=False)

    @classmethod
    def open(cls, data_dir: Path) -> LearnerData:
        """Read the customers and the log's event types; a missing directory means no learners.

        Raises:
            ValueError: when ``customers.parquet`` breaks the customer contract.
        """
        data = cls(data_dir=data_dir, customers=_no_customers(), type_firsts=_no_type_firsts())
        data._load()
        return data

    @property
    def events_path(self) -> Path:
        return self.data_dir / EVENTS_FILE

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

    def computed_rows(self, ids: Sequence[str], as_of: date) -> pd.DataFrame:
        """Features of ``ids`` at ``as_of`` from the stored events (``build_features``)."""
        spine = pd.DataFrame({"customer_id": list(ids), "as_of": pd.Timestamp(as_of)})
        return build_features(self.events_path, self.customers.reset_index(drop=True), spine=spine)

    def _load(self) -> None:
        self._stamp = self._file_stamp()
        self.customers = _read_customers(self.data_dir)
        self.type_firsts = (
            event_type_firsts(self.events_path) if self.events_path.exists() else _no_type_firsts()
        )
        self._checked_at = time.monotonic()

    def _file_stamp(self) -> tuple[float, ...]:
        paths = (self.data_dir / CUSTOMERS_FILE, self.events_path)
        return tuple(path.stat().st_mtime if path.exists() else -1.0 for path in paths)


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
            return cls(frame=pd.DataFrame())
        return cls(frame=frame, sources=dict.fromkeys(frame["customer_id"], source))

    def merged(self, other: DayFeatures) -> DayFeatures:
        """The rows, sources and problems of both (disjoint learners)."""
        frames = [frame for frame in (self.frame, other.frame) if len(frame)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return DayFeatures(
            frame=frame,
            sources={**self.sources, **other.sources},
            problems={**self.problems, **other.problems},
            unstored=self.unstored | other.unstored,
        )


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
    return computed.merged(inline).merged(DayFeatures(pd.DataFrame(), problems=problems))


def _known_enrolled(
    asks: Sequence[LearnerAsk], data: LearnerData, problems: dict[str, Problem]
) -> list[LearnerAsk]:
    """The asks of learners the store knows and who enrolled before the day; problems for others."""
    known = []
    for ask in asks:
        if ask.customer_id not in data.customers.index:
            problems[ask.customer_id] = NotFound(
                f"unknown learner {ask.customer_id!r}: not in the event store"
            )
        elif _enrolled_before(ask, data.customers.at[ask.customer_id, "enrolled_at"], problems):
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
    """Features from the events in the asks, checked with the file contracts first.

    All learners are checked together; when that fails, each is checked alone so that only the
    learners whose data breaks the contracts get a problem (with the validation problems).
    """
    usable = [
        ask
        for ask in asks
        if (customer := _customer_of(ask, data, problems)) is not None
        and _enrolled_before(ask, customer["enrolled_at"], problems)
    ]
    if not usable:
        return DayFeatures(pd.DataFrame())
    now = max(ask.now for ask in usable)
    checked = validate_inputs(*_inline_frames(usable, data), now=now)
    if not checked.report.ok:
        usable = [ask for ask in usable if _inline_ok(ask, data, problems)]
        if not usable:
            return DayFeatures(pd.DataFrame())
        checked = validate_inputs(*_inline_frames(usable, data), now=now)
    spine = pd.DataFrame(
        {"customer_id": [ask.customer_id for ask in usable], "as_of": pd.Timestamp(usable[0].as_of)}
    )
    frame = build_features(
        checked.events, checked.customers, spine=spine, type_firsts=data.type_firsts
    )
    unstored = {ask.customer_id for ask in usable if ask.customer_id not in data.customers.index}
    return dataclasses.replace(DayFeatures.of(frame, INLINE), unstored=frozenset(unstored))


def _customer_of(
    ask: LearnerAsk, data: LearnerData, problems: dict[str, Problem]
) -> dict[str, Any] | None:
    """The learner's customer record: from the ask, else from the event store."""
    if ask.customer is not None:
        customer = dict(ask.customer)
        customer["enrolled_at"] = _utc(customer["enrolled_at"])
        return {"customer_id": ask.customer_id, **customer}
    if ask.customer_id in data.customers.index:
        return data.customers.loc[ask.customer_id].to_dict()
    problems[ask.customer_id] = NotFound(
        f"unknown learner {ask.customer_id!r}: not in the event store; send their "
        "customer record (product_tag, enrolled_at, mrr) with the events"
    )
    return None


def _inline_ok(ask: LearnerAsk, data: LearnerData, problems: dict[str, Problem]) -> bool:
    checked = validate_inputs(*_inline_frames([ask], data), now=ask.now)
    if checked.report.ok:
        return True
    found = "; ".join(str(problem) for problem in checked.report.errors)
    problems[ask.customer_id] = Invalid(f"learner {ask.customer_id!r}: {found}")
    return False


def _inline_frames(
    asks: Sequence[LearnerAsk], data: LearnerData
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and customers of inline learners, in the contracts' columns and types."""
    events = [
        {"customer_id": ask.customer_id, **event, "ts": _utc(event["ts"])}
        for ask in asks
        for event in ask.events or ()
    ]
    events_frame = pd.DataFrame(events, columns=list(EVENT_COLUMNS))
    events_frame["ts"] = pd.to_datetime(events_frame["ts"], utc=True)
    customers = [_customer_of(ask, data, {}) for ask in asks]
    customers_frame = pd.DataFrame(customers, columns=list(CUSTOMER_COLUMNS))
    customers_frame["enrolled_at"] = pd.to_datetime(customers_frame["enrolled_at"], utc=True)
    return events_frame, customers_frame


def _utc(moment: datetime) -> datetime:
    """A timestamp in UTC; one without a time zone already is (the contracts' convention)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _read_customers(data_dir: Path) -> pd.DataFrame:
    path = data_dir / CUSTOMERS_FILE
    if not path.exists():
        logger.warning("no %s: only learners with inline events can be scored", path)
        frame, problems = load_customers(_no_customers())
    else:
        frame, problems = load_customers(path)
    errors = [str(problem) for problem in problems if problem.severity == "error"]
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return frame.set_index("customer_id", drop=False)


def _no_customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="str"),
            "product_tag": pd.Series(dtype="str"),
            "enrolled_at": pd.Series(dtype="datetime64[us, UTC]"),
            "mrr": pd.Series(dtype="float64"),
        }
    )


def _no_type_firsts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_type": pd.Series(dtype="str"),
            "first_ts": pd.Series(dtype="datetime64[us, UTC]"),
            "first_timed_ts": pd.Series(dtype="datetime64[us, UTC]"),
        }
    )


__all__ = [
    "EVENT_STORE",
    "INLINE",
    "DayFeatures",
    "LearnerData",
    "day_features",
    "inline_features",
]
