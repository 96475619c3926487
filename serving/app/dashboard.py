"""The dashboard's reads: the store's frames, loaded once per stored history and kept.

A page aggregates in DuckDB over frames (``serving.app.dashboard_data``); reading a million
learners' audit log from SQL costs seconds, so ``DashboardCache`` keeps the frames it read and
reads again only when the store's history moved (``StateStore.audit_head``: a new transition, a
completed run, an override set or cleared). The KPIs' inputs (every day's scores and decision
inputs) are read on the first page that needs them.
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
from serving.app.kpi_inputs import KpiInputs, StoredEvents, load_kpi_inputs
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
    """

    key: tuple[Any, ...]
    days: list[date]
    transitions: pd.DataFrame
    customers: pd.DataFrame
    latest_scores: pd.DataFrame
    kpi_inputs: KpiInputs | None = None
    memo: dict[Any, Any] = field(default_factory=dict)

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
    wait for its frames rather than each reading a million rows.
    """

    def __init__(self, source: DashboardSource, clock: Callable[[], datetime]) -> None:
        self.source = source
        self.clock = clock  # events after the clock's instant are an error in the labels' read
        self._frames: DashboardFrames | None = None
        self._lock = threading.Lock()

    def frames(self) -> DashboardFrames:
        """The frames of the current history."""
        key = self.source.store.audit_head()
        with self._lock:
            if self._frames is None or self._frames.key != key:
                self._frames = read_frames(self.source, key)
            return self._frames

    def kpi_inputs(self, frames: DashboardFrames) -> KpiInputs:
        """The KPIs' inputs up to the frames' latest day, read once per history."""
        with self._lock:
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


__all__ = [
    "DashboardCache",
    "DashboardFrames",
    "DashboardSource",
    "read_customers",
    "read_frames",
]
