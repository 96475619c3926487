"""The daily batch job: ``lstep score --as-of D`` (and ``--from D1 --to D2`` to backfill).

One day reads as its stages, one call each, I/O at the ends:

1. **inputs**: events and customers validated: parquet files proved clean by DuckDB
   (``features.parquet_check``) are read as they are, anything else is loaded and checked by
   ``features.validation.load_valid_inputs``, whose report a bad log fails with; a backfill
   validates them once for all its days.
2. **learners**: everyone eligible at ``as_of`` (``features.windows.feature_day``) plus every
   learner whose stored tag is live (not ST_006). A learner who stopped being active is no longer
   eligible, but must still be decided on, or "30 days inactive -> ST_006" (R09) could never fire.
   On an events file in time order the window is carried from the day before's, kept under
   ``<data_dir>/carry/`` (``features.carry``; ``BatchContext.carry_window``).
3. **features**: ``build_features(spine=...)``'s frame, the code training uses, on the window
   aggregates the learners stage computed.
4. **score** and 5. **decide**: ``serving.core.assess`` with the champion
   (``models:/lstep-churn@champion``) or, in rules-only mode, without; the run, every score row
   and every decision say which. A large day is scored in parts, each part decided on a thread
   while the next one is scored (``serving.core.parts``): "score" then holds most decisions too.
6. **write** (``serving.app.batch_write``): ``StateStore.apply_day``: transitions, the day's
   campaign messages (``plan_day_campaigns``: the rules' campaign catalogue,
   ``serving.core.campaigns``; its pending pairs read by the store's reader process from the
   start of the decide stage on, while the day is decided) and the
   run record in one transaction, the scores in the run's
   parquet file under ``<data_dir>/scores/`` that the commit makes the day's
   (``serving.infra.score_files``; in SQL for a store opened without a scores directory), idempotent
   per ``as_of`` (a completed day is not recomputed); a dry run writes nothing. The day's feature
   frame goes to ``<data_dir>/features/as_of=YYYY-MM-DD.parquet`` (the service's snapshot of the
   day) on a thread, from the decide stage on (DuckDB) or beside the campaign plan (Spark),
   waited for before the commit, so a completed day has its snapshot.
   The day's answers (every learner decided on the state the day leaves) go to
   ``<data_dir>/answers/`` (``serving.app.answers_table``): the service maps them instead of
   assessing every learner at start-up. They are decided on a thread while the day is planned
   and committed, on the state its moves predict, and kept after the commit when the store's
   state is that one (decided again on it otherwise).
7. **summary**: tag distribution and its change, transitions by rule, and the call list with
   each learner's reasons (``serving.app.summary``); the CLI renders it.

Stages 2-5 are the engine's step (``DayStep``): ``duckdb_step`` here, ``serving.app.spark_day``
for ``--engine spark``; the day order, the state before the day, the write and the summary are
shared, so both engines commit and report a day the same way.

A replaced day (``replace``, the latest completed day only) is decided against the state before
that day: the store undoes the day's automatic transitions in the same transaction.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from features.carry import CARRY_SUBDIR
from features.windows import feature_day
from rules import RuleSet
from serving.app.batch_inputs import BatchInputs
from serving.app.batch_write import start_snapshot, stored_tags, write_day
from serving.app.day_campaigns import CampaignPlanner, catalogue_planner, plan_day_campaigns
from serving.app.day_decisions import DecidedDay, cut_day
from serving.app.day_models import Models, loaded
from serving.app.day_reads import pending_pairs_at_decide, state_read
from serving.app.summary import TOP_LEARNERS, BatchResult, summarise, tag_counts
from serving.core.assess import Assessment, AssessOptions, ModelHandle, assess
from serving.core.frames import RunRecord, is_in, sorted_by_id
from serving.core.tags import CHURNED_TAG
from serving.infra.store import StateStore

STAGES: dict[str, str] = {
    "inputs": "check the inputs",
    "learners": "select learners",
    "features": "build features",
    "score": "score with the champion",
    "decide": "apply the rules",
    "snapshot": "finish the feature snapshot",
    "plan": "plan campaign messages",
    "write": "commit the day to the state store",
    "answers": "write the service's answers",
    "summary": "summarise",
}


JOB_STAGES: dict[str, str] = {"kpis": "store the day's KPIs"}
"""Work of a job after its days (``serving.app.jobs``), drawn as the days' ``STAGES`` are: at 1M
learners the stored KPIs take ~15 s after the last day's summary."""


class BatchProgress(Protocol):
    """Where a run reports its progress (the CLI draws bars; tests and schedulers need none)."""

    def stage(self, as_of: date, name: str) -> AbstractContextManager[None]:
        """Wraps one stage of one day (``STAGES``)."""
        ...

    def days(self, total: int, what: str = "backfill days") -> Callable[[date], None]:
        """Starts ``what`` (a backfill, the KPIs' run ledger) of ``total`` days; the callable is
        told each day done."""
        ...


@dataclass(frozen=True)
class AssessedDay:
    """What an engine step hands back: the day assessed, and what only that engine writes.

    Attributes:
        assessment: every learner of the day scored and decided, the capacity cut applied.
        eligible: how many of them are eligible (the rest are live-tagged but inactive).
        write_outputs: writes the engine's own files of the day (before the commit, like the
            feature snapshot); None when it has none.
        decided: the day's decide with what its capacity cut overwrote (``cut_day``), for the
            answers to reuse; None: the answers reuse ``assessment.decisions`` alone.
        snapshot: the feature snapshot, being written since the engine had its features
            (``batch_write.start_snapshot``); None: ``write_day`` writes it.
        window: how the day's window was made (``FeatureDay.window_made``); empty: not said.
        inputs: how the day's inputs were checked (``BatchInputs.how``); empty: not said.
    """

    assessment: Assessment
    eligible: int
    write_outputs: Callable[[], None] | None = None
    decided: DecidedDay | None = None
    snapshot: Future[Path] | None = None
    window: str = ""
    inputs: str = ""


Stage = Callable[[str], AbstractContextManager[None]]
"""Times a named stage of the day: ``with stage("features"): ...``."""


StateRead = Callable[[], pd.DataFrame]
"""The stored state before the day, being read while the engine's step begins: the first call
waits for it (``run_day``), later ones give the same frame."""


class DayStep(Protocol):
    """Learners -> features -> score -> decide of one day: the part an engine runs.

    Day order, the state before the day, the write, the answers and the summary are shared by
    every engine (``run_day``); only this step differs between DuckDB and Spark.
    """

    def __call__(
        self,
        as_of: date,
        inputs: BatchInputs,
        context: BatchContext,
        state: StateRead,
        stage: Stage,
    ) -> AssessedDay:
        """Assess the learners of ``as_of`` given their stored ``state``, timing ``stage``s."""
        ...


@dataclass(frozen=True)
class BatchContext:
    """What every day of a run shares, resolved once by the caller.

    Attributes:
        store: the state store.
        models: the champion and the rules (``Models``), or their load still running on a
            thread (``serving.app.jobs.load_models_beside``): ``champion`` and ``ruleset``
            wait for it, so a day's first stages (the inputs' check, the window) run while
            they load.
        run_id: the run's id (a backfill suffixes each day).
        now: the current instant (aware): validation limit and the run's ``started_at``.
        data_dir: where feature snapshots go (none written when None; a dry run's engine step
            is handed None).
        progress: where stage progress goes (None: nowhere).
        top: length of the call list in the summary.
        planner: plans the day's campaign messages; None: the catalogue of ``ruleset``
            (``catalogue_planner``).
        campaigns: False plans no message at all (the outbox is left alone).
        step: the engine that runs learners -> features -> score -> decide (``DayStep``);
            None: DuckDB in this process (``duckdb_step``).
        carry_window: keep the day's window under ``data_dir`` for the next day, and start
            from the day before's (``features.carry``); False aggregates every day's.
        carry_proof: keep the proof of the inputs under ``data_dir`` for the next day, which
            then checks only the events since (``features.kept_proof``); False proves the
            whole log every day.
    """

    store: StateStore
    models: Models | Future[Models]
    run_id: str
    now: datetime
    data_dir: Path | None = None
    progress: BatchProgress | None = None
    top: int = TOP_LEARNERS
    planner: CampaignPlanner | None = None
    campaigns: bool = True
    step: DayStep | None = None
    carry_window: bool = True
    carry_proof: bool = True

    @property
    def champion(self) -> ModelHandle | None:
        """The loaded champion, or None for a rules-only run (waits for ``models``: ``loaded``)."""
        return loaded(self.models).champion

    @property
    def ruleset(self) -> RuleSet:
        """The loaded rules (waits for ``models``: ``loaded``)."""
        return loaded(self.models).ruleset

    @property
    def carry_dir(self) -> Path | None:
        """Where the day's states for the next day are kept (None: no data directory)."""
        return None if self.data_dir is None else self.data_dir / CARRY_SUBDIR

    @property
    def kept_proof(self) -> Path | None:
        """Where the inputs' proof is kept (``carry_proof``), else None."""
        return self.carry_dir if self.carry_proof else None

    def stage(self, as_of: date, name: str) -> AbstractContextManager[None]:
        return nullcontext() if self.progress is None else self.progress.stage(as_of, name)


@dataclass
class _Timer:
    """Wall time per stage, around the context's own progress."""

    context: BatchContext
    as_of: date
    seconds: dict[str, float] = field(default_factory=dict)
    starts: dict[str, Callable[[], None]] = field(default_factory=dict)
    """Hooks called once, when their stage first starts (``on_start``)."""

    def on_start(self, name: str, hook: Callable[[], None]) -> None:
        """Call ``hook`` when stage ``name`` first starts (not at all if it never does)."""
        self.starts[name] = hook

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        hook = self.starts.pop(name, None)
        if hook is not None:
            hook()
        started = time.perf_counter()
        with self.context.stage(self.as_of, name):
            yield
        # Added up: the shared part of a stage (the state read of "learners") and the engine's.
        spent = self.seconds.get(name, 0.0) + time.perf_counter() - started
        self.seconds[name] = round(spent, 3)


def run_day(
    as_of: date,
    inputs: BatchInputs,
    context: BatchContext,
    *,
    dry_run: bool = False,
    replace: bool = False,
) -> BatchResult:
    """Run the daily batch for one ``as_of`` (see the module docstring).

    Raises:
        features.validation_report.InputError: the inputs fail validation (the rendered report).
        ValueError: a day before the latest completed one, or a replace of another day.
    """
    completed = _completed_runs(context.store)
    done = _check_day_order(as_of, completed, replace=replace)
    if done is not None:
        return _already_done(done, context.store)
    timer = _Timer(context, as_of)
    step = context.step or duckdb_step
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstep-early") as early:
        reading = state_read(early, context.store, as_of, completed, replace=replace)
        pending = None
        if not dry_run and context.campaigns:
            pending = pending_pairs_at_decide(early, context.store, as_of, timer.on_start)
        # a dry run writes nothing: its engine has no data directory to start a snapshot in
        day_context = dataclasses.replace(context, data_dir=None) if dry_run else context
        day = step(as_of, inputs, day_context, lambda: reading.result().state, timer)
        read = reading.result()
        pairs = None if pending is None else pending()
        write = None if dry_run else write_day(context, day, read, replace, timer, pairs)
    assessment, features = day.assessment, day.assessment.features
    run, snapshot = (None, None) if write is None else write
    with timer("summary"):
        stored = stored_tags(context.store, run)
        summary = summarise(assessment, read.state, run, stored, context.top)
    return BatchResult(
        as_of=as_of, run=run, dry_run=dry_run, already_done=False,
        rules_only=assessment.rules_only, model_version=assessment.model_version,
        learners=len(features), eligible=day.eligible, live_inactive=len(features) - day.eligible,
        stage_seconds=dict(timer.seconds), feature_snapshot=snapshot, assessment=assessment,
        window=day.window, inputs=day.inputs,
        **summary,
    )  # fmt: skip


def duckdb_step(
    as_of: date,
    inputs: BatchInputs,
    context: BatchContext,
    stored: StateRead,
    stage: Stage,
) -> AssessedDay:
    """The embedded engine: validation, learners and features in DuckDB, ``assess`` in pandas.

    Raises:
        features.validation_report.InputError: the inputs fail validation (the rendered report).
    """
    if not inputs.validated or inputs.proved:  # proved files: unchanged since, or again
        with stage("inputs"):
            inputs = inputs.checked(context.now, kept=context.kept_proof)
    with ExitStack() as open_day:
        with stage("learners"):
            # one DuckDB workspace, one pass over the window: the eligible learners are read off
            # the window's aggregates that the features then use (a pass of their own, the
            # window's distinct learners, cost ~0.4 s of CPU at 200k learners), so this stage
            # now holds the window's GROUP BY and "features" the rest
            carry = context.carry_dir if context.carry_window else None
            day = open_day.enter_context(
                feature_day(inputs.events, inputs.customers, as_of, carry=carry)
            )
            eligible = day.eligible()
            state = stored()
            spine = spine_of(eligible, state, as_of)
        with stage("features"):
            features = day.features(spine)
    # A whole day, cut to its capacity here rather than in assess (``whole_day=True``, the same
    # decisions): ``cut_day`` keeps what the cut overwrote, which the answers reuse.
    options = AssessOptions(check_output=True)
    assessment = assess(
        features, champion=context.champion, ruleset=context.ruleset, state=state, as_of=as_of,
        options=options, stage=stage,
    )  # fmt: skip
    snapshot = start_snapshot(context, features, as_of)  # beside the decide's one busy core
    with stage("decide"):
        decided = cut_day(context.ruleset, state, assessment.decisions, features)
    assessment = dataclasses.replace(assessment, decisions=decided.decisions)
    return AssessedDay(
        assessment, len(eligible), decided=decided, snapshot=snapshot, window=day.window_made,
        inputs=inputs.how,
    )  # fmt: skip


def run_range(
    start: date, end: date, inputs: BatchInputs, context: BatchContext, *, dry_run: bool = False
) -> list[BatchResult]:
    """Backfill: run the days ``start..end`` (inclusive) in order, validating the inputs once.

    Each day's run id is ``{run_id}-{YYYY-MM-DD}``; days already completed are skipped (their
    earlier record is returned). A dry run of several days is refused: each day is decided on
    the state the previous day wrote, which a dry run does not write.

    Raises:
        ValueError: ``end`` before ``start``, or a multi-day dry run.
        features.validation_report.InputError: as ``run_day``.
    """
    if end < start:
        raise ValueError(f"backfill: --to {end} is before --from {start}")
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    if dry_run and len(days) > 1:
        raise ValueError(
            f"backfill: a dry run covers one day ({len(days)} asked): each day is decided on the "
            "state the previous day writes"
        )
    if context.step is None:  # another engine reads (and checks) the inputs itself
        inputs = inputs.checked(context.now, kept=None if dry_run else context.kept_proof)
    # One bar over the days rather than a bar per stage per day: a month's backfill would
    # otherwise print some 200 lines.
    done = context.progress.days(len(days)) if context.progress is not None else None
    results = []
    for day in days:
        daily = dataclasses.replace(
            context, progress=None, run_id=f"{context.run_id}-{day.isoformat()}"
        )
        results.append(run_day(day, inputs, daily, dry_run=dry_run))
        if done is not None:
            done(day)
    return results


# --- stages ---------------------------------------------------------------------------------------


def _completed_runs(store: StateStore) -> pd.DataFrame:
    runs = store.runs()
    return runs[runs["status"] == "completed"]


def _check_day_order(as_of: date, completed: pd.DataFrame, *, replace: bool) -> RunRecord | None:
    """The completed record to reuse for ``as_of``, or None to run the day.

    Raises:
        ValueError: a day before the latest completed one, or replace of any other day.
    """
    if completed.empty:
        if replace:
            raise ValueError(f"replace: no completed run to replace (asked for {as_of})")
        return None
    latest = completed["as_of"].max().date()
    if replace and as_of != latest:
        raise ValueError(
            f"replace: only the latest completed day ({latest}) can be redone, not {as_of}"
        )
    if as_of < latest and not (completed["as_of"].dt.date == as_of).any():
        raise ValueError(
            f"{as_of} is before the latest completed batch day {latest}: days move forward; "
            "a missed day can only be run before later days"
        )
    same_day = completed[completed["as_of"].dt.date == as_of]
    if same_day.empty or replace:
        return None
    return RunRecord(**_record_values(same_day.iloc[0].to_dict()))


def _record_values(row: dict[str, Any]) -> dict[str, Any]:
    values = {name: (None if _is_missing(value) else value) for name, value in row.items()}
    values["as_of"] = pd.Timestamp(values["as_of"]).date()
    for name in ("started_at", "finished_at"):
        if values[name] is not None:
            values[name] = pd.Timestamp(values[name]).to_pydatetime()
    return values


def _is_missing(value: Any) -> bool:
    return not isinstance(value, dict | list | str) and bool(pd.isna(value))


def _already_done(run: RunRecord, store: StateStore) -> BatchResult:
    """The result of a day completed earlier: its record and the current tag distribution."""
    tags = tag_counts(store.state_frame()["tag"])
    return BatchResult(
        as_of=run.as_of,
        run=run,
        dry_run=False,
        already_done=True,
        rules_only=run.rules_only,
        model_version=run.model_version,
        tags_before=tags,
        tags_after=tags,
    )


def spine_of(eligible: pd.DataFrame, state: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The spine to decide on: the ``eligible`` learners UNION the live-tagged ones of ``state``.

    A learner who stopped being active is no longer eligible but must still be decided on, or
    "30 days inactive -> ST_006" (R09) could never fire. Sorted by customer_id.
    """
    live = state.loc[state["tag"] != CHURNED_TAG, "customer_id"]
    extra = live[~is_in(live, eligible["customer_id"])]
    day = pd.Timestamp(as_of.year, as_of.month, as_of.day).as_unit("us")
    kept = pd.DataFrame({"customer_id": extra.to_numpy(), "as_of": day})
    spine = pd.concat([eligible[["customer_id", "as_of"]], kept], ignore_index=True)
    return sorted_by_id(spine)


__all__ = [
    "JOB_STAGES",
    "STAGES",
    "AssessedDay",
    "BatchContext",
    "BatchInputs",
    "BatchProgress",
    "CampaignPlanner",
    "DayStep",
    "Models",
    "Stage",
    "StateRead",
    "catalogue_planner",
    "duckdb_step",
    "plan_day_campaigns",
    "run_day",
    "run_range",
    "spine_of",
]
