"""The dashboard's reads: the store's frames, loaded once per stored history and kept.

A page aggregates in DuckDB over frames (``serving.app.dashboard_data``); reading a million
learners' audit log from SQL costs seconds, so ``DashboardCache`` keeps the frames it read and
reads again only when the store's history moved (``StateStore.audit_head``: a new transition, a
completed run, an override set or cleared). The KPIs' inputs (every day's scores and decision
inputs) are read on the first page that needs them, and what no KPI day changes in them is found
once (``KpiHistory``): a filter narrows it to its learners rather than finding it again.

A cache opened with ``background=True`` (the service's) never makes a viewer wait for a history
that moved when it has frames to show: the request that finds the store moved starts one
refresh (the frames, the KPIs' history and the pages ``warm`` computes) on a thread and is served
the previous frames, with ``refreshing`` set for the page to say so; the next requests get the
new frames once read. The service also ``start``s the first read on a thread when it starts: a
request before it is done gets ``Preparing`` at once (the page says so and reloads itself). A
cache nobody started (the static export, the tests' in-process pages) reads in the request.

The figures a page computed are kept with the frames (``DashboardFrames.remembered``), the
``MEMO_LIMIT`` least recently used per filter combination; what the refresh's ``warm`` computed
(the unfiltered pages) is never evicted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from features.schemas import CUSTOMER_COLUMNS
from features.validation import valid_customers
from rules import RuleSet
from serving.app.kpi_days import KpiHistory, kpi_history
from serving.app.kpi_inputs import KpiInputs, StoredEvents, load_kpi_inputs
from serving.app.kpis import LABEL_HORIZON_DAYS
from serving.core.problems import NotFound, Problem, Unavailable
from serving.infra.store import StateStore

logger = logging.getLogger("bentoml.lstep")

MEMO_LIMIT = 64
"""Page figures kept per stored history beyond the warmed ones: one entry per filter combination
seen (a few kB each, a learner selection a few MB at 1M learners), the least recently used
evicted first."""


class Preparing(Unavailable):
    """The dashboard's first frames are being read (the service started them at start-up): a
    page answers with this at once rather than wait for a million learners' history."""

    def __init__(self, learners: int | None) -> None:
        whose = "the learners'" if learners is None else f"{learners:,} learners'"
        super().__init__(
            f"preparing the dashboard: {whose} history being read, this page reloads itself"
        )
        self.learners = learners


class ReadFailed(Unavailable):
    """The store's history could not be read (the store or a file did not answer); the next
    request tries again. A file breaking its contract stays the ``ValueError`` naming it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"the dashboard could not read the stored history: {error}")
        self.__cause__ = error


@dataclass(frozen=True)
class DashboardSource:
    """Where the dashboard reads.

    Attributes:
        store: the state store.
        customers_path: the customers file (tiers, enrolment cohorts).
        events_path: the event store's parquet file, for the labels of automation accuracy
            (absent: risk moves are judged on reverts only, as ``lstep kpis`` does).
        data_dir: where the batch's feature snapshots are.
        ruleset: the rules the KPIs' qualifying days are dated with.
    """

    store: StateStore
    customers_path: Path
    events_path: Path
    data_dir: Path
    ruleset: RuleSet


@dataclass
class DashboardFrames:
    """The frames of one stored history.

    Attributes:
        key: the ``audit_head`` they were read at.
        days: the completed batch days, oldest first.
        transitions: the audit log.
        customers: the customers (``CUSTOMER_COLUMNS``).
        latest_scores: the last completed day's stored scores (empty without a day).
        kpi_inputs: the KPIs' inputs, read on first use (``DashboardCache.kpi_inputs``).
        memo: results a page computed on these frames, by the page's key, least recently used
            first (``remembered``).
        kpi_history: the KPIs' inputs found for every day (``DashboardCache.kpi_history``).
        kept: the memo's keys never evicted: those computed while ``keeping`` (the warm hook's).
    """

    key: tuple[Any, ...]
    days: list[date]
    transitions: pd.DataFrame
    customers: pd.DataFrame
    latest_scores: pd.DataFrame
    kpi_inputs: KpiInputs | None = None
    memo: OrderedDict[Any, Any] = field(default_factory=OrderedDict)
    kpi_history: KpiHistory | None = None
    kept: set[Any] = field(default_factory=set)
    _keeping: bool = field(default=False, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def remembered(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``'s result for ``key``, computed once on these frames (a page's figures
        are a function of the stored history they were read at) and kept while it is among the
        ``MEMO_LIMIT`` least recently used, or for good when computed while ``keeping``."""
        with self._memo_lock:
            if key in self.memo:
                self.memo.move_to_end(key)
                return self.memo[key]
        value = compute()  # outside the lock: a part may ask for the parts it is built from
        with self._memo_lock:
            self.memo[key] = value
            self.memo.move_to_end(key)
            if self._keeping:
                self.kept.add(key)
            self._evict()
        return value

    @contextlib.contextmanager
    def keeping(self) -> Iterator[None]:
        """What is remembered inside is never evicted (the refresh's warm hook: the unfiltered
        pages every viewer starts from)."""
        self._keeping = True
        try:
            yield
        finally:
            self._keeping = False

    def _evict(self) -> None:
        """Drop the least recently used entries beyond ``MEMO_LIMIT`` (the kept ones aside)."""
        excess = len(self.memo) - len(self.kept) - MEMO_LIMIT
        if excess <= 0:
            return
        oldest = [key for key in self.memo if key not in self.kept][:excess]
        for key in oldest:
            del self.memo[key]

    @property
    def latest_day(self) -> date:
        """The last completed batch day.

        Raises:
            NotFound: no completed batch day yet.
        """
        if not self.days:
            raise NotFound("no completed batch run yet: run `lstep score --as-of DAY` first")
        return self.days[-1]


def read_customers(path: Path) -> pd.DataFrame:
    """The customers file (``CUSTOMER_COLUMNS``), or none when it does not exist.

    Raises:
        ValueError: the file breaks the customers contract (each error names the file).
    """
    if not Path(path).exists():
        return pd.DataFrame(
            {
                "customer_id": pd.Series(dtype=str),
                "product_tag": pd.Series(dtype=str),
                "enrolled_at": pd.Series(dtype="datetime64[us, UTC]"),
                "mrr": pd.Series(dtype="float64"),
            }
        )
    return valid_customers(path)[list(CUSTOMER_COLUMNS)]


def count_learners(path: Path) -> int | None:
    """The customers file's rows from its parquet footer (no data read); None without one."""
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):  # absent, or not parquet: the read will say what is wrong
        return None


def read_frames(source: DashboardSource, key: tuple[Any, ...]) -> DashboardFrames:
    """Read the frames a page aggregates over (the KPIs' inputs excepted)."""
    runs = source.store.runs()
    days = [stamp.date() for stamp in runs.loc[runs["status"] == "completed", "as_of"]]
    days = sorted(set(days))
    latest = source.store.scores_frame(days[-1]) if days else source.store.scores_frame(date.min)
    return DashboardFrames(
        key=key,
        days=days,
        transitions=source.store.transitions_frame(),
        customers=read_customers(source.customers_path),
        latest_scores=latest,
    )


class DashboardCache:
    """The frames of the store's current history, read again only when it moved.

    Thread-safe: the pages app serves requests on a thread pool; one reader reads, the others
    wait for its frames (or, with ``background``, are served the previous ones) rather than each
    reading a million rows.
    """

    def __init__(
        self,
        source: DashboardSource,
        clock: Callable[[], datetime],
        *,
        background: bool = False,
        warm: Callable[[DashboardCache, DashboardFrames], None] | None = None,
    ) -> None:
        self.source = source
        self.clock = clock  # events after the clock's instant are an error in the labels' read
        self.background = background
        self.warm = warm  # what a background refresh computes on new frames before serving them
        self._frames: DashboardFrames | None = None
        self._lock = threading.Lock()
        self._refresh: threading.Thread | None = None
        self._failed: Exception | None = None  # a refresh's error, raised to the next request
        self._started = False  # the first read runs on a thread too (``start``)
        self._learners: int | None = None  # the customers counted at ``start``, for ``Preparing``

    @property
    def refreshing(self) -> bool:
        """Whether newer frames are being read while the previous ones are served."""
        refresh = self._refresh
        return refresh is not None and refresh.is_alive()

    def start(self) -> None:
        """Read the first frames, and warm the pages, on a thread (the service's start-up): the
        requests that come before they are ready get ``Preparing`` at once, not a long wait.

        A cache nobody starts reads its first frames in the first request that needs them.
        """
        key = self.source.store.audit_head()
        learners = count_learners(self.source.customers_path)
        with self._lock:
            self._started, self._learners = True, learners
            if self._frames is None and not self.refreshing:
                self._read_on_thread(key)

    def frames(self) -> DashboardFrames:
        """The frames of the current history (with ``background``, the previous ones while the
        current are read, when there are previous ones).

        Raises:
            Preparing: the cache was ``start``ed and its first frames are not read yet.
        """
        key = self.source.store.audit_head()
        with self._lock:
            current, failed, self._failed = self._frames, self._failed, None
            if failed is not None:
                raise failed
            if current is not None and current.key == key:
                return current
            if current is None and self._started:
                if not self.refreshing:  # the first read failed (said once): try again
                    self._read_on_thread(key)
                raise Preparing(self._learners)
            if current is None or not self.background:
                self._frames = read_frames(self.source, key)
                return self._frames
            if not self.refreshing:
                self._read_on_thread(key)
            return current

    def _read_on_thread(self, key: tuple[Any, ...]) -> None:
        """Start the one refresh (called under the lock)."""
        self._refresh = threading.Thread(
            target=self._read_ahead, args=(key,), name="dashboard-refresh", daemon=True
        )
        self._refresh.start()

    def _read_ahead(self, key: tuple[Any, ...]) -> None:
        """Read the frames of ``key`` and their KPIs' history, warm the pages, then serve them."""
        try:
            frames = read_frames(self.source, key)
            if frames.days:
                self._load_history(frames)
        except Exception as error:  # handed to the next request, not lost
            with self._lock:
                self._failed = (
                    error if isinstance(error, ValueError | Problem) else ReadFailed(error)
                )
            return
        if frames.days and self.warm is not None:
            self._warm(frames)
        with self._lock:
            self._frames = frames

    def _warm(self, frames: DashboardFrames) -> None:
        """Compute what ``warm`` asks on ``frames``, kept for good; a page that fails here is
        logged and computed (and fails, naming why) again in the request that asks for it: the
        frames and the other pages are still served."""
        try:
            with frames.keeping():
                self.warm(self, frames)
        except Exception:
            logger.exception("warming the dashboard's pages failed; they are computed on request")

    def kpi_inputs(self, frames: DashboardFrames) -> KpiInputs:
        """The KPIs' inputs up to the frames' latest day, read once per history."""
        with self._lock:
            return self._load_inputs(frames)

    def kpi_history(self, frames: DashboardFrames) -> KpiHistory:
        """What no KPI day up to the frames' latest changes (``kpi_days.kpi_history``), found
        once per history."""
        with self._lock:
            return self._load_history(frames)

    def _load_inputs(self, frames: DashboardFrames) -> KpiInputs:
        if frames.kpi_inputs is None:
            events = None
            if self.source.events_path.exists():
                events = StoredEvents(self.source.events_path, self.clock())
            frames.kpi_inputs = load_kpi_inputs(
                self.source.store, frames.latest_day, events=events,
                ruleset=self.source.ruleset, data_dir=self.source.data_dir,
                transitions=frames.transitions,
            )  # fmt: skip
        return frames.kpi_inputs

    def _load_history(self, frames: DashboardFrames) -> KpiHistory:
        if frames.kpi_history is None:
            inputs = self._load_inputs(frames)
            frames.kpi_history = kpi_history(
                inputs.transitions, inputs.scores, frames.customers, until=frames.latest_day,
                outcomes=inputs.outcomes, decisions=inputs.decisions,
                horizon_days=LABEL_HORIZON_DAYS,
            )  # fmt: skip
        return frames.kpi_history


__all__ = [
    "MEMO_LIMIT",
    "DashboardCache",
    "DashboardFrames",
    "DashboardSource",
    "Preparing",
    "ReadFailed",
    "count_learners",
    "read_customers",
    "read_frames",
]
