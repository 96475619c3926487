"""The batch day's write: the feature snapshot, the campaign plan, the commit, the answers.

Stage 6 of ``serving.app.batch`` (see its docstring), shared by every engine: ``write_day``
writes the day's feature snapshot (and the engine's own files) on a thread beside the campaign
plan, commits the day to the state store (``StateStore.apply_day``) once both are done, and then
writes the service's answers file, decided on the state the day left; ``stored_tags`` is what the
summary reads back when the store left some moves out.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from serving.app.answers_table import write_day_answers
from serving.app.day_campaigns import catalogue_planner, plan_day_campaigns
from serving.app.day_decisions import DecidedDay
from serving.core.frames import RunRecord
from serving.core.planning import BatchDay
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
) -> tuple[RunRecord, Path | None]:
    """Write the day's feature snapshot (and the engine's own files), then commit the day.

    The snapshot is written on a thread of its own while this one plans the campaign messages
    (the parquet write releases the GIL; the plan is Python), and is waited for before the
    commit (the ``with`` joins the thread, whatever happens): features are a function of the log
    alone, so a snapshot whose commit never came is the one a rerun writes again, while a
    committed day always has its snapshot (a crash between the two used to leave a completed day
    without one, for good); a failed snapshot fails the day before the commit with its own
    exception, even when the plan failed too (as when it came first). The "snapshot" stage is
    what is left to wait for at that join (at 200k learners 0.0 s; snapshot + plan 1.17 s
    against 1.46 s in turn, medians of 6 alternated runs; no gain when no core is idle).
    The answers file is written after the commit on this thread: beside the summary (both
    mostly Python, the GIL's) it gained nothing at 200k (summary + answers 0.69 s, 0.70 s in
    turn, medians of 6 runs).
    """
    assessment = day.assessment
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstep-snapshot") as beside:
        snapshot_job = beside.submit(_write_snapshot, context, day)
        try:
            with stage("plan"):
                planner = context.planner or catalogue_planner(context.ruleset)
                campaigns = planner if context.campaigns else None
                plan = plan_day_campaigns(assessment, context.store, campaigns)
        finally:  # the snapshot's failure wins over the plan's, as when it ran first
            with stage("snapshot"):
                snapshot = snapshot_job.result()
    batch_day = BatchDay(
        assessment.as_of, context.run_id, assessment.model_version, assessment.rules_only,
        context.now, replace,
    )  # fmt: skip
    scores = None if assessment.rules_only else assessment.scores
    with stage("write"):
        run = context.store.apply_day(batch_day, assessment.decisions, scores, plan)
    with stage("answers"):
        if context.data_dir is not None:
            _write_answers(context, day, read)
    return run, snapshot


def _write_snapshot(context: BatchContext, day: AssessedDay) -> Path | None:
    """The engine's own files of the day, then the feature snapshot (its path, if written)."""
    if day.write_outputs is not None:
        day.write_outputs()
    if context.data_dir is None:
        return None
    features = day.assessment.features
    return write_feature_snapshot(features, Path(context.data_dir), day.assessment.as_of)


def _write_answers(context: BatchContext, day: AssessedDay, read: MarkedState) -> None:
    """The day's answers file for the service, decided on the state the day left (only the
    learners whose state the commit changed decided again, and those the cut moved when the
    engine kept no uncut decisions: ``decided``).

    The day is committed: a failure here costs the service a rebuild, not the day (warned).
    """
    assessment = day.assessment
    decided = day.decided or DecidedDay(read.state, assessment.decisions)
    try:
        write_day_answers(
            Path(context.data_dir), assessment.features, assessment.scores,
            ruleset=context.ruleset, state=context.store.state_after(assessment.as_of, *read),
            as_of=assessment.as_of, model_version=assessment.model_version, decided=decided,
        )  # fmt: skip
    except OSError as error:
        logger.warning("the day's answers file was not written (%s); the service builds it", error)


def stored_tags(store: StateStore, run: RunRecord | None) -> pd.Series | None:
    """The store's tags when it left some moves out (the summary must say what it holds)."""
    skipped = dict((run.summary or {}).get("skipped", {})) if run is not None else {}
    return store.state_frame()["tag"] if any(skipped.values()) else None


__all__ = ["stored_tags", "write_day"]
