"""Typed jobs: one frozen pydantic object per command, built by the CLI or read from YAML.

``lstep score --as-of D`` builds a ``BatchJob``, ``--from D1 --to D2`` a ``BackfillJob``,
``lstep report`` a ``ReportJob``; ``--config job.yaml`` reads the same object from a file (the
file's keys are the fields below; unknown keys are refused, naming them). ``job.run(runtime)``
opens what it needs from the runtime's settings and returns data; the CLI renders it.

Example ``job.yaml`` for a backfill in rules-only mode::

    start: 2026-06-01
    end: 2026-06-30
    rules_only: true
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.app.batch import (
    BatchContext,
    BatchInputs,
    BatchProgress,
    Models,
    run_day,
    run_range,
)
from serving.app.kpi_files import EventStore, day_kpis, ledger_bar
from serving.app.kpi_inputs import StoredEvents
from serving.app.summary import TOP_LEARNERS, BatchResult
from serving.core.problems import Invalid, NotFound
from serving.infra.champion import load_champion, require_champion
from serving.infra.rulesets import load_rules
from serving.infra.store import StateStore
from serving.infra.workspace import open_workspace_store
from serving.settings import Settings

JobT = TypeVar("JobT", bound=BaseModel)
logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a job runs with: where things are, the time, and where progress goes.

    Attributes:
        settings: locations (``LSTEP_*``).
        now: the current instant (aware), read once at the edge.
        progress: stage progress (None: nowhere).
        store: an open state store to use (None: opened from the settings).
    """

    settings: Settings
    now: datetime
    progress: BatchProgress | None = None
    store: StateStore | None = None

    def open_store(self) -> StateStore:
        if self.store is None:
            self.store = open_workspace_store(self.settings, self.now)
        return self.store


class Job(BaseModel):
    """Base of the jobs: frozen, unknown fields refused, loadable from YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> Self:
        """The job a YAML file describes; ``overrides`` (given options) win over the file."""
        return load_job(cls, path, overrides)


def load_job(kind: type[JobT], path: Path, overrides: dict[str, Any] | None = None) -> JobT:
    """A job (any frozen pydantic model) from a YAML file of its fields, ``overrides`` winning.

    Raises:
        Invalid: the file is not a mapping or breaks the job's fields (naming the file).
    """
    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise Invalid(f"{path}: expected a mapping of job fields, got {type(loaded).__name__}")
    try:
        return kind(**{**loaded, **(overrides or {})})
    except ValidationError as error:
        fields = "; ".join(
            f"{'.'.join(str(part) for part in found['loc']) or 'job'}: {found['msg']}"
            for found in error.errors()
        )
        raise Invalid(f"{path}: {fields}") from None


class _BatchFields(Job):
    events: Path | None = None
    customers: Path | None = None
    mapping: Path | None = None
    allow_unknown: bool = False
    dry_run: bool = False
    rules_only: bool = False
    rules_dir: Path | None = None
    report: bool = False
    top: int = Field(default=TOP_LEARNERS, ge=1)
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[2]"

    @contextmanager
    def _engine(self, runtime: Runtime, context: BatchContext) -> Iterator[BatchContext]:
        """``context`` with the job's engine: DuckDB as it is, or a Spark session for the run.

        Raises:
            Invalid: a mapping with the Spark engine (it reads the contract's columns only).
            NotFound: the Spark master cannot be reached.
        """
        if self.engine == "duckdb":
            yield context
            return
        if self.mapping is not None:
            raise Invalid(f"{self.mapping}: --mapping is not supported with --engine spark yet")
        from serving.app.spark_day import spark_step  # pyspark only when asked for

        with spark_step(runtime.settings, context.champion, master=self.spark_master) as step:
            yield dataclasses.replace(context, step=step)

    def _context(self, runtime: Runtime) -> BatchContext:
        return batch_context(
            runtime, rules_only=self.rules_only, rules_dir=self.rules_dir, top=self.top
        )

    def _inputs(self, settings: Settings) -> BatchInputs:
        events, customers = event_store_paths(settings, self.events, self.customers)
        return BatchInputs(
            events=events, customers=customers, mapping=self.mapping,
            allow_unknown=self.allow_unknown,
        )  # fmt: skip

    def _store_kpis(
        self, runtime: Runtime, context: BatchContext, results: list[BatchResult]
    ) -> None:
        """Store the last day's KPIs as ``lstep kpis`` computes them (``serving.app.kpi_files``):
        the first ``lstep kpis`` of the day then reads them. Only the last day's: each later day
        moves the audit head that keys an earlier day's."""
        if self.dry_run or not results or results[-1].run is None:
            return
        version = None if context.champion is None else str(context.champion.version)
        settings = runtime.settings
        sources = EventStore(
            data_dir=settings.data_path, events=settings.events_path,
            customers=settings.customers_path, rules_dir=self.rules_dir,
        )  # fmt: skip
        day = results[-1].as_of
        try:
            with context.stage(day, "kpis"):
                day_kpis(
                    context.store, day, sources, lambda _: (context.ruleset, version),
                    now=runtime.now, ledger_days=ledger_bar(context.progress),
                )  # fmt: skip
        except ValueError as error:  # the day is committed: a bad event store file only costs
            # the stored KPIs (`lstep kpis` then names the problem)
            logger.warning("the KPIs of %s were not stored: %s", day, error)

    def _report(self, runtime: Runtime, results: list[BatchResult]) -> Path | None:
        if not self.report or self.dry_run:
            return None
        job = ReportJob(
            as_of=results[-1].as_of,
            events=self.events,
            customers=self.customers,
            rules_dir=self.rules_dir,
        )
        return job.run(runtime)


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch or backfill job did: one result per day, and the report it wrote."""

    results: list[BatchResult]
    report: Path | None = None


class BatchJob(_BatchFields):
    """``lstep score --as-of D``: the daily batch of one day (idempotent)."""

    as_of: date
    replace: bool = False

    def run(self, runtime: Runtime) -> BatchOutcome:
        """Run the day; with ``report``, then write its HTML report."""
        inputs = self._inputs(runtime.settings)
        with self._engine(runtime, self._context(runtime)) as context:
            result = run_day(
                self.as_of, inputs, context, dry_run=self.dry_run, replace=self.replace
            )
            self._store_kpis(runtime, context, [result])
        return BatchOutcome(results=[result], report=self._report(runtime, [result]))


class BackfillJob(_BatchFields):
    """``lstep score --from D1 --to D2``: the daily batch over days, in order."""

    start: date
    end: date

    def run(self, runtime: Runtime) -> BatchOutcome:
        """Run every day from ``start`` to ``end``; with ``report``, report the last one."""
        inputs = self._inputs(runtime.settings)
        with self._engine(runtime, self._context(runtime)) as context:
            results = run_range(self.start, self.end, inputs, context, dry_run=self.dry_run)
            self._store_kpis(runtime, context, results)
        return BatchOutcome(results=results, report=self._report(runtime, results))


class ReportJob(Job):
    """``lstep report``: the self-contained HTML page of a batch day for CS leads."""

    as_of: date | None = None
    out: Path | None = None
    events: Path | None = None
    customers: Path | None = None
    rules_dir: Path | None = None

    def run(self, runtime: Runtime) -> Path:
        """Write the report of ``as_of`` (default: the latest completed batch day).

        Raises:
            NotFound: no completed batch run yet, or an event store file is missing.
        """
        from serving.app.report import ReportInputs, write_report  # matplotlib: report only

        settings, store = runtime.settings, runtime.open_store()
        day = self.as_of or store.latest_batch_day()
        if day is None:
            raise NotFound("no completed batch run yet: run `lstep score --as-of DAY` first")
        events, customers = event_store_paths(settings, self.events, self.customers)
        progress = runtime.progress
        with nullcontext() if progress is None else progress.stage(day, "inputs"):
            event_log, customer_frame = _report_inputs(events, customers, runtime.now)
        champion = load_champion(settings.tracking_uri, settings.model_name)
        sources = ReportInputs(
            champion=champion,
            ruleset=load_rules(self.rules_dir, champion=champion),
            events=event_log,
            customers=customer_frame,
        )
        return write_report(store, settings, as_of=day, inputs=sources, out=self.out)


def _report_inputs(
    events: Path, customers: Path, now: datetime
) -> tuple[pd.DataFrame | StoredEvents, pd.DataFrame]:
    """The event log as the report reads it, and the validated customers.

    Parquet files DuckDB proves clean (``BatchInputs.checked``, as ``lstep score`` does) are
    read as files: only the rows each section needs (``StoredEvents``); anything else is
    validated whole, as before. At 1M learners x 60 days the whole validation took ~60 s at
    9.4 GiB before the report read anything.

    Raises:
        features.validation_report.InputError: the inputs fail validation (the full report).
    """
    from features.validation import valid_customers

    checked = BatchInputs(events=events, customers=customers).checked(now)
    if not checked.proved:
        return checked.events, checked.customers
    return StoredEvents(events, now), valid_customers(customers, as_of_limit=now)


def batch_context(
    runtime: Runtime, *, rules_only: bool, rules_dir: Path | None = None, top: int = TOP_LEARNERS
) -> BatchContext:
    """Store, champion (unless rules-only), rules and a new run id: what every day shares.

    The champion and the rules load on a thread (``load_models_beside``): their error, such as
    a ``NoChampionError`` (no champion and not rules-only), comes from the first day that
    needs them.
    """
    settings = runtime.settings
    return BatchContext(
        store=runtime.open_store(),
        models=load_models_beside(
            settings.tracking_uri, settings.model_name, rules_only=rules_only, rules_dir=rules_dir
        ),
        run_id=f"run-{uuid.uuid4().hex[:12]}",
        now=runtime.now,
        data_dir=settings.data_path,
        progress=runtime.progress,
        top=top,
        carry_window=settings.carry_window,
        carry_proof=settings.carry_proof,
    )


def load_models(
    tracking_uri: str, model_name: str, *, rules_only: bool, rules_dir: Path | None = None
) -> Models:
    """The champion (None in rules-only mode) and the rules it resolves.

    Raises:
        NoChampionError: no champion and not rules-only.
    """
    loaded = None if rules_only else load_champion(tracking_uri, model_name)
    champion = require_champion(loaded, rules_only=rules_only, model_name=model_name)
    return Models(champion, load_rules(rules_dir, champion=champion))


def load_models_beside(
    tracking_uri: str, model_name: str, *, rules_only: bool, rules_dir: Path | None = None
) -> Future[Models]:
    """``load_models`` on a thread of its own, from now on.

    Loading the champion is ~1 s of Python, most of it MLflow's imports, which held up a whole
    day's start; the inputs' check and the window are DuckDB's, which leaves the GIL and part
    of a core free. A million learners' steady day (the time-ordered log): champion load and
    window in turn 7.6-8.7 s, side by side 6.9-7.3 s (3 alternated runs).
    """
    # Two threads importing one package at once can meet it half-initialised (alembic's
    # import cycle, MLflow's store beside the state store's migration: "cannot import name
    # '_ProxyTransaction' from partially initialized module"): what the load shares with the
    # day is imported here first, at no cost once the store has been opened.
    import alembic.command  # noqa: F401
    import sqlalchemy.orm  # noqa: F401

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstep-models")
    try:
        return pool.submit(
            load_models, tracking_uri, model_name, rules_only=rules_only, rules_dir=rules_dir
        )
    finally:
        pool.shutdown(wait=False)  # its one thread ends with the load


def event_store_paths(
    settings: Settings, events: Path | None, customers: Path | None
) -> tuple[Path, Path]:
    """Explicit files, or the event store under ``LSTEP_DATA_DIR`` (what ``lstep demo`` fills).

    Raises:
        NotFound: a file does not exist (saying how to fill the event store).
    """
    events = events or settings.events_path
    customers = customers or settings.customers_path
    for path in (events, customers):
        if not path.exists():
            raise NotFound(
                f"{path} does not exist: pass --events/--customers, or run `lstep demo` (or "
                "`lstep simulate --out $LSTEP_HOME/data`) to fill the event store"
            )
    return events, customers


__all__ = [
    "BackfillJob",
    "BatchJob",
    "BatchOutcome",
    "Job",
    "ReportJob",
    "Runtime",
    "batch_context",
    "event_store_paths",
    "load_job",
    "load_models",
    "load_models_beside",
]
