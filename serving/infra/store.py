"""The durable state store: status tags, audit log, overrides, scores and batch runs (DESIGN §5).

A store opened with a scores directory (``from_settings``, the apps) keeps the days' scores there
as parquet, one file per day and run (``serving.infra.score_files``); without one, in the SQL
``scores`` table. Either way the reads (``scores_frame``, ``latest_score``) give the same rows.

SQLite (WAL) under ``LSTEP_HOME`` by default, PostgreSQL by URL; the schema comes from the Alembic
revisions in ``serving/migrations``, applied by ``StateStore.migrate`` (the constructor runs it).

Guarantees, and how they are kept:

- **One writer at a time.** Every write runs in a serialised transaction: ``BEGIN IMMEDIATE`` on
  SQLite (other writers wait up to ``busy_timeout``), ``pg_advisory_xact_lock`` on PostgreSQL
  (keyed by the schema, so stores in different schemas do not wait for each other).
- **A batch is all-or-nothing and idempotent per ``as_of``.** ``apply_batch`` first records the
  run as ``running`` in a short transaction; with a scores directory it writes the run's scores
  file (seen by readers only once the run is the day's completed one); then it writes scores (in
  SQL, without a directory), transitions, status rows and the ``completed`` run record in one
  transaction. A process killed midway never commits: the previous state stays intact and a
  rerun of the same ``as_of`` completes it. Running a completed ``as_of`` again writes nothing
  and returns the stored record. Days move forward: a day before the latest completed one is
  refused.
- **replace=True** redoes the latest completed day only (an earlier day would leave later days
  built on a state that no longer exists): it deletes that day's scores and automatic
  transitions, puts each learner it moved back on the tag of its last remaining transition, and
  writes the new decisions, all in the same transaction (the replaced run's scores file is
  removed after the commit; the replacing run needs a run id of its own, which names its file).
  Manual transitions are never deleted; overrides that the replaced day's moves to ST_006 closed
  stay closed.
- **An override is never lost to a batch.** ``set_override`` takes the same writer lock, so it
  lands before or after a batch transaction, never inside it. Inside the batch transaction the
  decisions are checked against the state read there: automatic moves (other than to ST_006) of a
  learner with an active override, or whose tag is no longer the decision's ``from_tag`` (the
  state changed after the snapshot the decisions came from), are skipped and counted in the run
  summary, never silently.
- **Campaign messages commit with their day** (``apply_day``): ``serving.infra.outbox_store``.
- **A committed day is on disk when its commit returns.** On SQLite the day's commit syncs its
  WAL (``sql.wal_synced_commit``); copying the WAL into the file (the checkpoint) runs on a
  thread after it, off the day's path, and ``close`` waits for it.
- **Status is derived from the log.** A learner's status row always holds the ``to_tag`` and
  ``as_of`` of their latest transition.

Bulk rows go in by binary COPY on PostgreSQL and by the driver's executemany on SQLite: a day of
a million learners with its scores in SQL (plus a tenth of them moving) commits in about 9 s on
either here; SQL inserts run at ~110k rows/s even into a bare table, hence the scores files.

Overrides and state live on the data's clock (``serving.core.overrides``,
``serving.infra.state_sql``): an override applies to data days ``effective_as_of <= as_of <
expires`` (and before ``cleared_as_of``); reads of a day are point-in-time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, inspect, select, text, update
from sqlalchemy.pool import SingletonThreadPool

from serving.core.frames import (
    RunRecord,
)
from serving.core.overrides import (
    OverridePolicy,
    OverrideRequest,
    next_batch_day,
    plan_clear,
    plan_override,
)
from serving.core.planning import (
    AppliedResult,
    BatchDay,
    checked_decisions,
    plan_transitions,
    require_aware,
    run_summary,
    transition_rows,
)
from serving.core.problems import ApplyRefused, Unavailable
from serving.infra.arrow_reads import sqlite_path, start_reader
from serving.infra.outbox_store import OutboxMixin
from serving.infra.score_files import SCORES_SUBDIR, remove_files, score_file, write_scores
from serving.infra.sql import (
    WRITER_OPTION,
    bulk_insert,
    check_run_id_free,
    checkpoint_wal,
    existing_run,
    latest_completed,
    open_engine,
    store_errors,
    undo_run,
    update_status_from_run,
    upsert_run,
    wal_synced_commit,
)
from serving.infra.state_sql import (
    active_hold_ids,
    clear_override,
    close_overrides_of_moved,
    open_override,
    read_tags,
    read_tags_of,
    write_override,
)
from serving.infra.store_reads import MarkedState, ReadsMixin, StateChanges
from serving.infra.tables import BatchRun, Score, Status, Transition
from serving.settings import Settings, utc_now

MIGRATIONS_LOCATION = "serving.infra:migrations"
HEAD_REVISION = "0006_outbox_learner_index"
"""The newest migration (a test holds it to Alembic's head): a store there needs no Alembic."""
_ADVISORY_LOCK_CLASS = 0x15_7E_90  # first key of pg_advisory_xact_lock: "lstep state store"


class StateStore(ReadsMixin, OutboxMixin):
    """Durable learner state behind the batch job, the override CLI/endpoint and the KPI report."""

    def __init__(
        self,
        url: str,
        *,
        scores_dir: Path | None = None,
        auto_migrate: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Connect to ``url`` and, unless ``auto_migrate`` is False, upgrade the schema to head.

        Args:
            url: SQLAlchemy URL; a SQLite file's directory is created when missing.
            scores_dir: where the days' scores go as parquet (``serving.infra.score_files``);
                None keeps them in the SQL ``scores`` table. The apps pass the workspace's
                ``<data_dir>/scores`` (``from_settings``).
            auto_migrate: run ``migrate()`` now (idempotent; safe from several processes).
            clock: stamps ``finished_at`` of batch runs; every other time is passed in as ``now``.
        """
        self.url = url
        self.scores_dir = None if scores_dir is None else Path(scores_dir)
        self._clock = clock
        self._engine = open_engine(url)
        self._checkpoint: threading.Thread | None = None
        if sqlite_path(self._engine.url) is not None:
            start_reader()  # its whole-table reads (``arrow_reads``) find it ready
        if auto_migrate:
            self.migrate()

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        """The store of ``settings``, scores under ``<data_dir>/scores`` (apps use
        ``open_workspace_store``: it never re-creates)."""
        return cls(settings.state_database_url, scores_dir=settings.data_path / SCORES_SUBDIR)

    def close(self) -> None:
        """Wait for a batch's checkpoint (``_checkpoint_later``), then close every pooled
        connection."""
        if self._checkpoint is not None:
            self._checkpoint.join()
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def readable_beside(self) -> bool:
        """Whether another thread may read the store while this one uses it: its connections
        see one database (an in-memory SQLite database is one per thread's connection)."""
        return not isinstance(self._engine.pool, SingletonThreadPool)

    def is_empty(self) -> bool:
        """True when the database holds no lstep schema yet (new, deleted or dropped)."""
        with self._connect() as conn:
            return not inspect(conn).has_table("alembic_version")

    def at_head(self) -> bool:
        """True when the schema is at ``HEAD_REVISION`` (a read: no Alembic, no writer lock)."""
        with self._connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return False
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return versions.all() == [HEAD_REVISION]

    def migrate(self) -> None:
        """Upgrade the schema to the newest Alembic revision, under the writer lock."""
        # Imported here: Alembic costs most of a second and only migrating needs it.
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", MIGRATIONS_LOCATION)
        with self._writer() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    # ---- writes ------------------------------------------------------------------------------

    def next_batch_day(self, now: datetime) -> date:
        """The first data day an override recorded now may take effect on."""
        with self._connect() as conn:
            return next_batch_day(latest_completed(conn), now)

    def set_override(
        self, request: OverrideRequest, *, policy: OverridePolicy, now: datetime
    ) -> dict[str, Any]:
        """Record an override on the data's clock: override row, manual move and status at once.

        Returns:
            The override row written (with its ``effective_as_of`` and ``expires``).

        Raises:
            ValueError: from ``plan_override``, naming what is wrong (unknown tag or learner, a
                move ``tags.yaml`` does not allow, an effective day already decided, an expiry
                not after it, a campaign outside its box, a blank actor or reason).
        """
        require_aware(now, "now")
        with self._writer() as conn:
            current_tag = conn.execute(
                select(Status.tag).where(Status.customer_id == request.customer_id)
            ).scalar_one_or_none()
            first_day = next_batch_day(latest_completed(conn), now)
            planned = plan_override(request, current_tag, first_day, policy, now)
            write_override(conn, planned.row, planned.from_tag, planned.moves)
        return planned.row

    def clear_override(
        self,
        customer_id: str,
        *,
        words: tuple[str, str],
        now: datetime,
        effective: date | None = None,
    ) -> dict[str, Any]:
        """End a learner's open override early, recording who and why (``plan_clear``).

        Returns:
            The override row as cleared.

        Raises:
            ValueError: no open override, a blank actor or reason, or a day already decided.
        """
        require_aware(now, "now")
        with self._writer() as conn:
            found = open_override(conn, customer_id)
            first_day = next_batch_day(latest_completed(conn), now)
            values = plan_clear(customer_id, found, words, first_day, effective)
            clear_override(conn, found["id"], values, now)  # type: ignore[index]
        return {**found, **values, "cleared_at": now}  # type: ignore[dict-item]

    def apply_batch(
        self,
        as_of: date,
        decisions: pd.DataFrame,
        scores: pd.DataFrame | None,
        *,
        run_id: str,
        model_version: str | None,
        rules_only: bool,
        now: datetime,
        replace: bool = False,
    ) -> RunRecord:
        """Write one day's decisions and scores, all or nothing (see the module docstring).

        Args:
            as_of: the batch day; every decision row must carry it.
            decisions: the rules engine's frame (``DECISIONS_SCHEMA``); every row becomes a score
                row, the ``changed`` ones become transitions.
            scores: the model's frame (``SCORES_INPUT_SCHEMA``) giving ``p_low``/``p_high``; None
                or empty for a rules-only run.
            run_id: this run's id; the returned record carries another when the day was done.
            model_version: the model that scored the day (None for rules-only runs).
            rules_only: whether the model was left out.
            now: when the batch started (``started_at``, ``created_at`` of its rows).
            replace: redo the day even if completed; allowed for the latest completed day only.

        Returns:
            The stored run record: the new one, or the existing one when the day was completed.

        Raises:
            ValueError: invalid frames, a day before the latest completed one, or replace of a
                day that is not the latest completed one.
        """
        batch = BatchDay(as_of, run_id, model_version, rules_only, now, replace)
        return self.apply_day(batch, decisions, scores)

    def apply_learners(
        self,
        as_of: date,
        decisions: pd.DataFrame,
        *,
        run_id: str,
        model_version: str | None,
        now: datetime,
    ) -> AppliedResult:
        """Write the changed decisions of some learners, outside a daily batch.

        One writer transaction, under the same lock and checks as ``apply_batch``: moves of
        learners with an active override (except to ST_006), or whose stored tag is no longer
        the decision's ``from_tag``, are skipped. Status rows follow the new transitions. No
        score rows and no ``batch_runs`` row are written: the day is not marked done, so the
        daily batch still runs on it.

        Args:
            as_of: the decisions' day; not before the latest completed batch day.
            decisions: rules-engine rows (``DECISIONS_SCHEMA``) of ``as_of``.
            run_id: stamped on the transitions (e.g. ``api-<uuid>``).
            model_version: the model that scored the learners (None in rules-only mode).
            now: when the moves are written (aware).

        Raises:
            ApplyRefused: ``as_of`` is before the latest completed batch day (days move forward).
            ValueError: invalid decisions, a naive ``now`` or an empty ``run_id``.
        """
        require_aware(now, "now")
        if not run_id.strip():
            raise ValueError("run_id is empty")
        checked = checked_decisions(as_of, decisions)
        with self._writer() as conn:
            latest = latest_completed(conn)
            if latest is not None and as_of < latest:
                raise ApplyRefused(
                    f"as_of {as_of} is before the latest batch day ({latest}): moves are "
                    "applied on or after it, as batches are"
                )
            tags = read_tags(conn, as_of, checked["customer_id"].tolist())
            plan = plan_transitions(checked, tags, active_hold_ids(conn, as_of))
            rows = transition_rows(plan.applied, run_id, model_version, now)
            bulk_insert(conn, Transition.__table__, rows)
            update_status_from_run(conn, run_id)
            close_overrides_of_moved(conn, run_id, as_of, now)
        outcomes: dict[str, str | None] = dict.fromkeys(plan.applied["customer_id"])
        for reason, skipped in plan.skipped.items():
            outcomes.update(dict.fromkeys(skipped, reason))
        return AppliedResult(run_id=run_id, outcomes=outcomes)

    def _claim_run(self, batch: BatchDay) -> RunRecord | None:
        """Return the completed record to reuse, or mark the day ``running`` and return None."""
        with self._writer() as conn:
            check_run_id_free(conn, batch.run_id, batch.as_of)
            existing = existing_run(conn, batch.as_of, batch.replace)
            if existing is not None and batch.replace and existing.run_id == batch.run_id:
                # The run id names the day's scores file: the replacing run's would overwrite
                # the completed one's before the replacing transaction commits.
                raise ValueError(
                    f"replace needs a new run_id: {batch.run_id!r} already names the completed "
                    f"batch of {batch.as_of}"
                )
            if existing is not None:
                # A completed day stays ``completed`` during a replace: its data is intact
                # until the replacing transaction commits.
                return None if batch.replace else existing
            upsert_run(conn, batch.run_values("running"))
        return None

    def _write_batch(
        self, conn: Connection, batch: BatchDay, decisions: pd.DataFrame, scores: pd.DataFrame
    ) -> tuple[RunRecord, str | None]:
        """The batch transaction: re-check the day, then write everything and complete the run.

        Returns:
            The run record, and the id of the run it replaced (None: none replaced).
        """
        existing = existing_run(conn, batch.as_of, batch.replace)
        if existing is not None and not batch.replace:
            return existing, None  # another process completed the day while we waited
        if existing is not None:
            undo_run(conn, existing, batch.now)  # also the day's SQL scores of a store before
        # Only the changed decisions are checked against the stored tags (plan_transitions).
        tags_then = read_tags_of(
            conn, batch.as_of, decisions.loc[decisions["changed"], "customer_id"]
        )
        plan = plan_transitions(decisions, tags_then, active_hold_ids(conn, batch.as_of))
        if self.scores_dir is None:  # else written to the run's file before this transaction
            bulk_insert(conn, Score.__table__, scores)
        transitions = transition_rows(plan.applied, batch.run_id, batch.model_version, batch.now)
        bulk_insert(conn, Transition.__table__, transitions)
        update_status_from_run(conn, batch.run_id)
        close_overrides_of_moved(conn, batch.run_id, batch.as_of, batch.now)
        summary = run_summary(decisions, scores, plan)
        values = batch.run_values("completed", self._clock(), summary)
        upsert_run(conn, values)
        return RunRecord(**values), None if existing is None else existing.run_id

    def _write_scores(self, batch: BatchDay, rows: pd.DataFrame) -> None:
        """The run's scores file, before its transaction (nothing without a scores directory)."""
        if self.scores_dir is not None:
            write_scores(self.scores_dir, batch.as_of, batch.run_id, rows)

    def _discard_scores(self, as_of: date, run_id: str) -> None:
        """Remove a failed run's file, unless its run id is the day's completed one (another
        process of the same run id did the day: the file is that day's)."""
        if self.scores_dir is None:
            return
        try:
            with self._connect() as conn:
                completed = conn.execute(
                    select(BatchRun.run_id).where(
                        BatchRun.as_of == as_of, BatchRun.status == "completed"
                    )
                ).scalar_one_or_none()
        except Unavailable:
            return  # the store cannot tell: a leftover file is harmless, a lost day is not
        if completed != run_id:
            self._retire_scores(as_of, [run_id])

    def _retire_scores(self, as_of: date, run_ids: Iterable[str | None]) -> None:
        """Remove the files of runs no reader will see (replaced, lost or failed), by name."""
        if self.scores_dir is not None:
            names = {run_id for run_id in run_ids if run_id is not None}
            remove_files(score_file(self.scores_dir, as_of, run_id) for run_id in names)

    def _mark_failed(self, as_of: date, error: Exception) -> None:
        """Record why a batch failed, unless the day is completed (a failed replace)."""
        try:
            with self._writer() as conn:
                conn.execute(
                    update(BatchRun)
                    .where(BatchRun.as_of == as_of, BatchRun.status != "completed")
                    .values(
                        status="failed",
                        finished_at=self._clock(),
                        summary={"error": f"{type(error).__name__}: {error}"},
                    )
                )
        except Exception as mark_error:  # the original error matters more; keep both
            error.add_note(f"and marking the run failed raised {mark_error!r}")

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection; a store that cannot be reached or written is one ``Unavailable`` line."""
        with store_errors(self.url), self._engine.connect() as conn:
            yield conn

    def _checkpoint_later(self) -> None:
        """Copy a batch's WAL (committed and synced: ``_writer(synced=True)``) into the SQLite
        file on a thread of its own, off the batch's path; ``close`` waits for it."""
        if self._engine.dialect.name != "sqlite":
            return
        if self._checkpoint is not None:
            self._checkpoint.join()
        self._checkpoint = threading.Thread(
            target=checkpoint_wal, args=(self._engine,), name="lstep-wal-checkpoint"
        )
        self._checkpoint.start()

    @contextmanager
    def _writer(self, *, synced: bool = False) -> Iterator[Connection]:
        """A transaction that holds the store's single-writer lock until it ends.

        Args:
            synced: SQLite: the commit syncs the WAL and skips the automatic checkpoint
                (``sql.wal_synced_commit``); the caller checkpoints (``_checkpoint_later``).
        """
        with self._connect() as conn, ExitStack() as settings:
            conn.execution_options(**{WRITER_OPTION: True})
            if synced:
                settings.enter_context(wal_synced_commit(conn))
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text(
                            "SELECT pg_advisory_xact_lock("
                            ":lock_class, hashtext(coalesce(current_schema(), '')))"
                        ),
                        {"lock_class": _ADVISORY_LOCK_CLASS},
                    )
                yield conn


__all__ = [
    "MIGRATIONS_LOCATION",
    "AppliedResult",
    "ApplyRefused",
    "MarkedState",
    "StateChanges",
    "StateStore",
]
