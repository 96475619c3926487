"""The dashboard's reads: the store's frames, loaded once per stored history and kept.

A page aggregates in DuckDB over frames (``serving.app.dashboard_data``); reading a million
learners' audit log from SQL costs seconds, so ``DashboardCache`` keeps the frames it read and
reads again only when the store's history moved (``StateStore.audit_head``: a new transition, a
completed run, an override set or cleared). The KPIs' inputs (every day's scores and decision
inputs) are read on the first page that needs them, and what no KPI day changes in them is found
once (``KpiHistory``): a filter narrows it to its learners rather than finding it again.

A cache opened with ``background=True`` (the service's) never makes a viewer wait for a history
that moved when it has frames to show: the request that finds the store moved starts one
refresh (the frames and the KPIs' history) on a thread and is served the previous frames, with
``refreshing`` set for the page to say so; the next requests get the new frames once read. Only
the first request of a process, with no frames at all, waits for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.schemas import CUSTOMER_COLUMNS
from features.validation import valid_customers
from rules import RuleSet
from serving.app.kpi_days import KpiHistory, kpi_history
from serving.app.kpi_inputs import KpiInputs, StoredEvents, load_kpi_inputs
from serving.app.kpis import LABEL_HORIZON_DAYS
from serving.core.problems import NotFound
from serving.infra.store import StateStore


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
        memo: results a page computed on these frames, by the page's key (figures are small).
        kpi_history: the KPIs' inputs found for every day (``DashboardCache.kpi_history``).
    """

    key: tuple[Any, ...]
    days: list[date]
    transitions: pd.DataFrame
    customers: pd.DataFrame
    latest_scores: pd.DataFrame
    kpi_inputs: KpiInputs | None = None
    memo: dict[Any, Any] = field(default_factory=dict)
    kpi_history: KpiHistory | None = None

    def remembered(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``'s result for ``key``, computed once on these frames (a page's figures
        are a function of the stored history they were read at)."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

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

    @property
    def refreshing(self) -> bool:
        """Whether newer frames are being read while the previous ones are served."""
        refresh = self._refresh
        return refresh is not None and refresh.is_alive()

    def frames(self) -> DashboardFrames:
        """The frames of the current history (with ``background``, the previous ones while the
        current are read, when there are previous ones)."""
        key = self.source.store.audit_head()
        with self._lock:
            current, failed, self._failed = self._frames, self._failed, None
            if failed is not None:
                raise failed
            if current is not None and current.key == key:
                return current
            if current is None or not self.background:
                self._frames = read_frames(self.source, key)
                return self._frames
            if not self.refreshing:
                self._refresh = threading.Thread(
                    target=self._read_ahead, args=(key,), name="dashboard-refresh", daemon=True
                )
                self._refresh.start()
            return current

    def _read_ahead(self, key: tuple[Any, ...]) -> None:
        """Read the frames of ``key`` and their KPIs' history, then serve them."""
        try:
            frames = read_frames(self.source, key)
            if frames.days:
                self._load_history(frames)
                if self.warm is not None:
                    self.warm(self, frames)
        except Exception as error:  # handed to the next request, not lost
            with self._lock:
                self._failed = error
            return
        with self._lock:
            self._frames = frames

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
    "DashboardCache",
    "DashboardFrames",
    "DashboardSource",
    "read_customers",
    "read_frames",
]
