"""The durable state store: status tags, audit log, overrides, scores and batch runs (DESIGN §5).

SQLite (WAL) under ``LSTEP_HOME`` by default, PostgreSQL by URL; the schema comes from the Alembic
revisions in ``serving/migrations``, applied by ``StateStore.migrate`` (the constructor runs it).

Guarantees, and how they are kept:

- **One writer at a time.** Every write runs in a serialised transaction: ``BEGIN IMMEDIATE`` on
  SQLite (other writers wait up to ``busy_timeout``), ``pg_advisory_xact_lock`` on PostgreSQL
  (keyed by the schema, so stores in different schemas do not wait for each other).
- **A batch is all-or-nothing and idempotent per ``as_of``.** ``apply_batch`` first records the
  run as ``running`` in a short transaction, then writes scores, transitions, status rows and the
  ``completed`` run record in one transaction. A process killed midway never commits: the previous
  state stays intact and a rerun of the same ``as_of`` completes it. Running a completed ``as_of``
  again writes nothing and returns the stored record. Days move forward: a day before the latest
  completed one is refused.
- **replace=True** redoes the latest completed day only (an earlier day would leave later days
  built on a state that no longer exists): it deletes that day's scores and automatic
  transitions, puts each learner it moved back on the tag of its last remaining transition, and
  writes the new decisions, all in the same transaction. Manual transitions are never deleted;
  overrides that the replaced day's moves to ST_006 closed stay closed.
- **An override is never lost to a batch.** ``set_override`` takes the same writer lock, so it
  lands before or after a batch transaction, never inside it. Inside the batch transaction the
  decisions are checked against the state read there: automatic moves (other than to ST_006) of a
  learner with an active override, or whose tag is no longer the decision's ``from_tag`` (the
  state changed after the snapshot the decisions came from), are skipped and counted in the run
  summary, never silently.
- **Campaign messages commit with their day** (``apply_day``): ``serving.infra.outbox_store``.
- **Status is derived from the log.** A learner's status row always holds the ``to_tag`` and
  ``as_of`` of their latest transition.

Bulk rows go in by binary COPY on PostgreSQL and by the driver's executemany on SQLite: a day of
a million learners (scores, plus a tenth of them moving) commits in about 9 s on either here.

Overrides and state live on the data's clock (``serving.core.overrides``,
``serving.infra.state_sql``): an override applies to data days ``effective_as_of <= as_of <
expires`` (and before ``cleared_as_of``); reads of a day are point-in-time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, inspect, select, text, update

from serving.core.frames import (
    OVERRIDES_SCHEMA,
    RUNS_SCHEMA,
    STATE_SCHEMA,
    STORED_SCORES_SCHEMA,
    TRANSITIONS_SCHEMA,
    RunRecord,
    state_frame_of_rows,
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
from serving.core.problems import ApplyRefused
from serving.core.state import StateRow, state_row
from serving.infra.outbox_store import OutboxMixin
from serving.infra.sql import (
    WRITER_OPTION,
    bulk_insert,
    check_run_id_free,
    existing_run,
    first_mapping,
    latest_completed,
    open_engine,
    read_frame,
    store_errors,
    transitions_select,
    undo_run,
    update_status_from_run,
    upsert_run,
)
from serving.infra.state_sql import (
    STATE_ROWS,
    active_hold_ids,
    clear_override,
    close_overrides_of_moved,
    open_override,
    overrides_select,
    read_tags,
    state_select,
    write_override,
)
from serving.infra.tables import BatchRun, Override, Score, Status, Transition
from serving.settings import Settings, utc_now

MIGRATIONS_LOCATION = "serving.infra:migrations"
HEAD_REVISION = "0003_campaigns"
"""The newest migration (a test holds it to Alembic's head): a store there needs no Alembic."""
_ADVISORY_LOCK_CLASS = 0x15_7E_90  # first key of pg_advisory_xact_lock: "lstep state store"


class StateStore(OutboxMixin):
    """Durable learner state behind the batch job, the override CLI/endpoint and the KPI report."""

    def __init__(
        self,
        url: str,
        *,
        auto_migrate: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Connect to ``url`` and, unless ``auto_migrate`` is False, upgrade the schema to head.

        Args:
            url: SQLAlchemy URL; a SQLite file's directory is created when missing.
            auto_migrate: run ``migrate()`` now (idempotent; safe from several processes).
            clock: stamps ``finished_at`` of batch runs; every other time is passed in as ``now``.
        """
        self.url = url
        self._clock = clock
        self._engine = open_engine(url)
        if auto_migrate:
            self.migrate()

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        """The store of ``settings`` (apps use ``open_workspace_store``: it never re-creates)."""
        return cls(settings.state_database_url)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    # ---- reads -------------------------------------------------------------------------------

    def state_frame(
        self, as_of: date | None = None, customer_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Each learner's tag on data day ``as_of`` and the override applying then.

        Args:
            as_of: the data day (point-in-time: a learner's latest transition on or before it,
                and the override whose window holds it); None for the current tags and the
                open overrides.
            customer_ids: only these learners (those without a status have no row).
        """
        stmt = state_select(as_of, None if customer_ids is None else list(customer_ids))
        with self._connect() as conn:
            return read_frame(conn, stmt, STATE_SCHEMA)

    def state_rows(self, customer_ids: Sequence[str], as_of: date) -> dict[str, StateRow]:
        """``state_frame(as_of, customer_ids)`` as ``StateRow`` tuples, in one indexed query.

        The service checks the learners of each request against the state its precomputed
        answers were decided on (``serving.app.answers``); a frame and its checks would cost
        more than the whole answer. The query is the same select, compiled once.

        Returns:
            customer_id -> (tag, since, override_tag, override_expires) for the learners that
            have a status; the override columns are None without an override applying on as_of.
        """
        if not customer_ids:
            return {}
        parameters = {"customer_ids": list(customer_ids), "as_of": as_of}
        with self._connect() as conn:
            rows = conn.execute(STATE_ROWS, parameters)
            return {row[0]: state_row(*row[1:5]) for row in rows}

    def state_of(self, customer_ids: Sequence[str], as_of: date) -> pd.DataFrame:
        """``state_frame(as_of, customer_ids)`` of a few learners, without its pandera pass.

        The online scorer reads the state of each request's learners: the compiled query of
        ``state_rows`` costs ~0.1 ms, the frame's validation ~7 ms. The frame is the same
        (``state_frame_of_rows``).
        """
        if not customer_ids:
            return state_frame_of_rows([])
        parameters = {"customer_ids": list(customer_ids), "as_of": as_of}
        with self._connect() as conn:
            return state_frame_of_rows([tuple(row) for row in conn.execute(STATE_ROWS, parameters)])

    def history(self, customer_id: str) -> pd.DataFrame:
        """One learner's transitions, oldest first (``TRANSITIONS_SCHEMA``; empty if unknown)."""
        stmt = transitions_select().where(Transition.customer_id == customer_id)
        with self._connect() as conn:
            return read_frame(conn, stmt, TRANSITIONS_SCHEMA)

    def current(self, customer_id: str) -> dict[str, Any] | None:
        """A learner's status row plus their open override (``override`` is None without one)."""
        with self._connect() as conn:
            status = first_mapping(
                conn, select(*Status.__table__.columns).where(Status.customer_id == customer_id)
            )
            if status is None:
                return None
            override = first_mapping(
                conn,
                select(
                    Override.tag,
                    Override.kind,
                    Override.actor,
                    Override.reason,
                    Override.created_at,
                    Override.effective_as_of,
                    Override.expires,
                ).where(Override.customer_id == customer_id, Override.cleared_at.is_(None)),
            )
        return {**status, "override": override}

    def runs(self) -> pd.DataFrame:
        """Every batch run, oldest ``as_of`` first (``RUNS_SCHEMA``)."""
        stmt = select(*BatchRun.__table__.columns).order_by(BatchRun.as_of)
        with self._connect() as conn:
            return read_frame(conn, stmt, RUNS_SCHEMA)

    def transitions_frame(self, until: date | None = None) -> pd.DataFrame:
        """The audit log in append order, up to and including ``as_of == until`` when given."""
        stmt = transitions_select()
        if until is not None:
            stmt = stmt.where(Transition.as_of <= until)
        with self._connect() as conn:
            return read_frame(conn, stmt, TRANSITIONS_SCHEMA)

    def scores_frame(
        self, as_of: date | None = None, *, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Stored scores (``STORED_SCORES_SCHEMA``), of one day when ``as_of`` is given, and
        only ``columns`` when given, in that order: every day's scores (learners x days rows) cost
        by the column, and the KPIs need a third of them."""
        table = Score.__table__.columns
        chosen = list(table) if columns is None else [table[name] for name in columns]
        stmt = select(*chosen).order_by(Score.as_of, Score.customer_id)
        if as_of is not None:
            stmt = stmt.where(Score.as_of == as_of)
        schema = STORED_SCORES_SCHEMA
        if columns is not None:
            schema = schema.select_columns(list(columns))
        with self._connect() as conn:
            return read_frame(conn, stmt, schema)

    def latest_score(self, customer_id: str) -> dict[str, Any] | None:
        """The learner's last stored score row: one query on the (customer_id, as_of) key."""
        stmt = select(*Score.__table__.columns).where(Score.customer_id == customer_id)
        with self._connect() as conn:
            return first_mapping(conn, stmt.order_by(Score.as_of.desc()).limit(1))

    # ---- writes ------------------------------------------------------------------------------

    def overrides_frame(
        self, customer_id: str | None = None, *, live_from: date | None = None
    ) -> pd.DataFrame:
        """Overrides, newest first (``OVERRIDES_SCHEMA``).

        Args:
            customer_id: one learner's only.
            live_from: only those still applying on or after this data day (not expired, not
                cleared by then; future-dated ones included).
        """
        with self._connect() as conn:
            return read_frame(conn, overrides_select(customer_id, live_from), OVERRIDES_SCHEMA)

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
            if existing is not None:
                # A completed day stays ``completed`` during a replace: its data is intact
                # until the replacing transaction commits.
                return None if batch.replace else existing
            upsert_run(conn, batch.run_values("running"))
        return None

    def _write_batch(
        self, conn: Connection, batch: BatchDay, decisions: pd.DataFrame, scores: pd.DataFrame
    ) -> RunRecord:
        """The batch transaction: re-check the day, then write everything and complete the run."""
        existing = existing_run(conn, batch.as_of, batch.replace)
        if existing is not None and not batch.replace:
            return existing  # another process completed the day while we waited for the lock
        if existing is not None:
            undo_run(conn, existing, batch.now)
        tags_then = read_tags(conn, batch.as_of)
        plan = plan_transitions(decisions, tags_then, active_hold_ids(conn, batch.as_of))
        bulk_insert(conn, Score.__table__, scores)
        transitions = transition_rows(plan.applied, batch.run_id, batch.model_version, batch.now)
        bulk_insert(conn, Transition.__table__, transitions)
        update_status_from_run(conn, batch.run_id)
        close_overrides_of_moved(conn, batch.run_id, batch.as_of, batch.now)
        summary = run_summary(decisions, scores, plan)
        values = batch.run_values("completed", self._clock(), summary)
        upsert_run(conn, values)
        return RunRecord(**values)

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

    @contextmanager
    def _writer(self) -> Iterator[Connection]:
        """A transaction that holds the store's single-writer lock until it ends."""
        with self._connect() as conn:
            conn.execution_options(**{WRITER_OPTION: True})
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


__all__ = ["MIGRATIONS_LOCATION", "AppliedResult", "ApplyRefused", "StateStore"]
