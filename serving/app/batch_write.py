"""The batch day's write: the feature snapshot, the campaign plan, the commit, the answers.

Stage 6 of ``serving.app.batch`` (see its docstring), shared by every engine: ``write_day``
writes the day's feature snapshot (and the engine's own files) on a thread beside the campaign
plan, commits the day to the state store (``StateStore.apply_day``) once both are done, and then
writes the service's answers file, decided on the state the day left (on another thread while the
plan and the commit run, on the state the day's moves predict); ``stored_tags`` is what the
summary reads back when the store left some moves out.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from serving.app.answers_table import StagedAnswers, answers_table, stage_answers
from serving.app.day_campaigns import catalogue_planner, plan_day_campaigns
from serving.app.day_decisions import DecidedDay
from serving.core.assess import Assessment
from serving.core.frames import RunRecord
from serving.core.messages import CampaignPlan
from serving.core.planning import BatchDay
from serving.core.state import moves_match, state_after_moves
from serving.infra.snapshots import write_feature_snapshot
from serving.infra.store import MarkedState, StateStore

if TYPE_CHECKING:  # batch.py imports this module: its types only for the annotations
    from serving.app.batch import AssessedDay, BatchContext, Stage

logger = logging.getLogger("lstep")


def write_day(
    context: BatchContext,
    day: AssessedDay,
    read: MarkedState,
    replace: bool,
    stage: Stage,
    pending: Future[pd.DataFrame] | None = None,
) -> tuple[RunRecord, Path | None]:
    """Write the day's feature snapshot (and the engine's own files), then commit the day.

    The snapshot is written on a thread of its own while this one plans the campaign messages
    (the parquet write releases the GIL; the plan is Python), unless the engine started it
    already (``start_snapshot``, ``AssessedDay.snapshot``), and is waited for before the
    commit (the ``with`` joins the thread, whatever happens): features are a function of the log
    alone, so a snapshot whose commit never came is the one a rerun writes again, while a
    committed day always has its snapshot (a crash between the two used to leave a completed day
    without one, for good); a failed snapshot fails the day before the commit with its own
    exception, even when the plan failed too (as when it came first). The "snapshot" stage is
    what is left to wait for at that join (at 200k learners 0.0 s; snapshot + plan 1.17 s
    against 1.46 s in turn, medians of 6 alternated runs; no gain when no core is idle).

    While the day is planned and committed, the answers are decided and written on the second
    thread (``_predicted_answers``), and published after the commit if the store then holds the
    state they were decided on (``_write_answers``). They start with the plan, not the commit:
    at 1M learners a steady day's plan + write + answers took 10.7 s against 12.0 s started
    with the commit (one run each, machine otherwise idle), the first load's plan ~2 s longer
    (answers of every learner beside it) while its 30 s commit hid them either way. A failed
    plan or commit waits for them before it is raised, and their file is removed.

    ``pending``: the plan's pending pairs, being read since the day's decide stage began
    (``run_day``); None reads them in the plan.
    """
    assessment = day.assessment
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="lstep-write") as beside:
        snapshot_job = beside.submit(_write_snapshot, context, day)
        predicted = None
        if context.data_dir is not None and not replace:
            predicted = beside.submit(_predicted_answers, context, day, read)
        try:
            try:
                with stage("plan"):
                    plan = _plan(context, assessment, pending)
            finally:  # the snapshot's failure wins over the plan's, as when it ran first
                with stage("snapshot"):
                    snapshot = snapshot_job.result()
            scores = None if assessment.rules_only else assessment.scores
            with stage("write"):
                run = context.store.apply_day(
                    _batch_day(context, assessment, replace), assessment.decisions, scores, plan
                )
        except BaseException:
            _discard(predicted)
            raise
        with stage("answers"):
            if context.data_dir is not None:
                _write_answers(context, day, read, predicted)
    return run, snapshot


def _batch_day(context: BatchContext, assessment: Assessment, replace: bool) -> BatchDay:
    """What the store records of the day it commits."""
    return BatchDay(
        assessment.as_of, context.run_id, assessment.model_version, assessment.rules_only,
        context.now, replace,
    )  # fmt: skip


def _plan(
    context: BatchContext, assessment: Assessment, pending: Future[pd.DataFrame] | None
) -> CampaignPlan | None:
    """The day's campaign plan (None: campaigns are off)."""
    planner = context.planner or catalogue_planner(context.ruleset)
    campaigns = planner if context.campaigns else None
    pairs = None if pending is None else pending.result()
    return plan_day_campaigns(assessment, context.store, campaigns, pending=pairs)


def start_snapshot(
    context: BatchContext, features: pd.DataFrame, as_of: date
) -> Future[Path] | None:
    """The day's feature snapshot, written from now on a thread of its own (None: no data dir).

    For an engine that has its features before it decides (``duckdb_step``): the decide stage
    is Python on one core, the parquet write takes the other, where beside the plan it shared
    two busy cores (1M learners' steady day 19.7, 19.7 -> 19.2, 19.2 s, alternated). ``write_day``
    waits for it before the commit, as for a snapshot of its own.
    """
    if context.data_dir is None:
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstep-snapshot")
    try:
        return pool.submit(write_feature_snapshot, features, Path(context.data_dir), as_of)
    finally:
        pool.shutdown(wait=False)  # its one thread ends with the write


def _write_snapshot(context: BatchContext, day: AssessedDay) -> Path | None:
    """The engine's own files of the day, then the feature snapshot (its path, if written)."""
    if day.write_outputs is not None:
        day.write_outputs()
    if day.snapshot is not None:  # started by the engine (``start_snapshot``)
        return day.snapshot.result()
    if context.data_dir is None:
        return None
    features = day.assessment.features
    return write_feature_snapshot(features, Path(context.data_dir), day.assessment.as_of)


@dataclass(frozen=True)
class _Predicted:
    """The state the day's moves predict (``state_after_moves``) and its answers, staged."""

    state: pd.DataFrame
    answers: StagedAnswers


def _predicted_answers(context: BatchContext, day: AssessedDay, read: MarkedState) -> _Predicted:
    """The day's answers decided on the state its moves will leave and written under a
    temporary name, while the day is planned and committed.

    They waited for the commit and a read of the state after it: at 1M learners ~3.6 s on a
    steady day, ~8.6 s on a first load (every learner moved, so decided again). Deciding and
    writing them is Python and Arrow, beside the plan's and the commit's SQLite work, which
    releases the GIL.

    Raises:
        OSError: the data directory cannot be written.
    """
    assessment = day.assessment
    state = state_after_moves(read.state, assessment.decisions, assessment.as_of)
    table = _answers_on(context, day, read, state)
    return _Predicted(state, stage_answers(Path(context.data_dir), table, ruleset=context.ruleset))


def _answers_on(
    context: BatchContext, day: AssessedDay, read: MarkedState, state: pd.DataFrame
) -> pa.Table:
    """``answers_table`` of the day on ``state``, reusing the day's first decide."""
    assessment = day.assessment
    return answers_table(
        assessment.features, assessment.scores, ruleset=context.ruleset, state=state,
        as_of=assessment.as_of, model_version=assessment.model_version,
        decided=day.decided or DecidedDay(read.state, assessment.decisions),
    )  # fmt: skip


def _write_answers(
    context: BatchContext,
    day: AssessedDay,
    read: MarkedState,
    predicted: Future[_Predicted] | None,
) -> None:
    """The day's answers file for the service, decided on the state the day left (only the
    learners whose state the commit changed decided again, and those the cut moved when the
    engine kept no uncut decisions: ``decided``).

    The ``predicted`` answers are published when the store's state after the commit is the
    state they were decided on (the normal day: the store applied every move and nobody changed
    a learner's state meanwhile); otherwise they are removed and decided again on the store's,
    as they are when deciding them ahead failed (warned: the day's answers do not depend on it).
    The day is committed: a failure here costs the service a rebuild, not the day (warned).
    """
    try:
        made = predicted.result() if predicted is not None else None
    except Exception as error:  # a shortcut only: decided on the store's state below
        logger.warning("the day's answers were not ready at the commit (%s); deciding them", error)
        made = None
    as_of = day.assessment.as_of
    changes = context.store.state_changes(as_of, *read)
    try:
        decisions = day.assessment.decisions
        ahead = made is not None and changes is not None
        if ahead and moves_match(read.state, decisions, as_of, changes.ids, changes.fresh):
            made.answers.place()  # the store's state is the one they were decided on
            return
        state = context.store.state_with(as_of, read.state, changes)
        if made is not None and made.state.equals(state):
            made.answers.place()
            return
        if made is not None:
            made.answers.discard()
        table = _answers_on(context, day, read, state)
        stage_answers(Path(context.data_dir), table, ruleset=context.ruleset).place()
    except OSError as error:
        logger.warning("the day's answers file was not written (%s); the service builds it", error)


def _discard(predicted: Future[_Predicted] | None) -> None:
    """After a failed plan or commit: wait for the predicted answers, and remove their file."""
    if predicted is None:
        return
    try:
        predicted.result().answers.discard()
    except Exception:  # the commit's failure is the one to raise
        logger.debug("the predicted answers of a failed day failed too", exc_info=True)


def stored_tags(store: StateStore, run: RunRecord | None) -> pd.Series | None:
    """The store's tags when it left some moves out (the summary must say what it holds)."""
    skipped = dict((run.summary or {}).get("skipped", {})) if run is not None else {}
    return store.state_frame()["tag"] if any(skipped.values()) else None


__all__ = ["stored_tags", "write_day"]
