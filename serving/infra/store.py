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
- **Status is derived from the log.** A learner's status row always holds the ``to_tag`` and
  ``as_of`` of their latest transition.

Bulk rows go in by binary COPY on PostgreSQL and by the driver's executemany on SQLite: a day of
a million learners (scores, plus a tenth of them moving) commits in about 9 s on either here.

An override is active while it is not cleared and ``as_of < expires`` (``expires`` is the first
day it no longer applies); a new override of the same learner clears the previous one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, inspect, select, text, update

from serving.core.frames import (
    RUNS_SCHEMA,
    STATE_SCHEMA,
    STORED_SCORES_SCHEMA,
    TRANSITIONS_SCHEMA,
    RunRecord,
)
from serving.core.planning import (
    check_override_request,
    check_override_target,
    checked_decisions,
    plan_transitions,
    require_aware,
    run_summary,
    score_rows,
    transition_rows,
)
from serving.core.problems import ApplyRefused
from serving.core.state import StateRow, state_row
from serving.core.tags import CAMPAIGN_KIND, HOLD_KIND, MANUAL_ONLY_TAG
from serving.infra.sql import (
    STATE_ROWS,
    WRITER_OPTION,
    active_override_ids,
    bulk_insert,
    check_run_id_free,
    clear_overrides_of_churned,
    existing_run,
    first_mapping,
    latest_completed,
    open_engine,
    read_frame,
    read_tags,
    read_tags_of,
    state_select,
    store_errors,
    transitions_select,
    undo_run,
    update_status_from_run,
    upsert_run,
    write_override,
)
from serving.infra.tables import BatchRun, Override, Score, Status, Transition
from serving.settings import Settings, utc_now

MIGRATIONS_LOCATION = "serving.infra:migrations"
_ADVISORY_LOCK_CLASS = 0x15_7E_90  # first key of pg_advisory_xact_lock: "lstep state store"


@dataclass(frozen=True)
class _Batch:
    """One ``apply_batch`` call: the day, the run's identity and when it started."""

    as_of: date
    run_id: str
    model_version: str | None
    rules_only: bool
    now: datetime
    replace: bool

    def run_values(
        self,
        status: str,
        finished_at: datetime | None = None,
        summary: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``batch_runs`` row of this run in ``status``."""
        return {
            "run_id": self.run_id,
            "as_of": self.as_of,
            "status": status,
            "started_at": self.now,
            "finished_at": finished_at,
            "model_version": self.model_version,
            "rules_only": self.rules_only,
            "summary": summary,
        }


@dataclass(frozen=True)
class AppliedResult:
    """What ``StateStore.apply_learners`` did.

    Attributes:
        run_id: the run id stamped on the written transitions.
        outcomes: customer_id -> None when the learner's move was written, else why it was
            skipped (``overridden``, ``stale_from_tag``, ``already_churned``); changed decisions
            only.
    """

    run_id: str
    outcomes: dict[str, str | None]

    @property
    def applied(self) -> list[str]:
        """The learners whose move was written."""
        return [customer_id for customer_id, reason in self.outcomes.items() if reason is None]


class StateStore:
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
        """Current tag per learner with the open override, if any (``STATE_SCHEMA``).

        Args:
            as_of: when given, overrides that expired by then (``expires <= as_of``) are left
                out; without it every uncleared override is returned with its ``expires``.
            customer_ids: only these learners (those without a status have no row).
        """
        stmt = state_select(as_of).order_by(Status.customer_id)
        if customer_ids is not None:
            stmt = stmt.where(Status.customer_id.in_(list(customer_ids)))
        with self._connect() as conn:
            return read_frame(conn, stmt, STATE_SCHEMA)

    def state_rows(self, customer_ids: Sequence[str], as_of: date) -> dict[str, StateRow]:
        """``state_frame(as_of, customer_ids)`` as ``StateRow`` tuples, in one indexed query.

        The service checks the learners of each request against the state its precomputed
        answers were decided on (``serving.app.answers``); a frame and its checks would cost
        more than the whole answer. The query is the same select, compiled once.

        Returns:
            customer_id -> (tag, since, override_tag, override_expires) for the learners that
            have a status; the override columns are None without an override active on as_of.
        """
        if not customer_ids:
            return {}
        parameters = {"customer_ids": list(customer_ids), "as_of": as_of}
        with self._connect() as conn:
            rows = conn.execute(STATE_ROWS, parameters)
            return {row[0]: state_row(*row[1:]) for row in rows}

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
                    Override.actor,
                    Override.reason,
                    Override.created_at,
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

    def scores_frame(self, as_of: date | None = None) -> pd.DataFrame:
        """Stored scores, of one day when ``as_of`` is given (``SCORES_SCHEMA``)."""
        stmt = select(*Score.__table__.columns).order_by(Score.as_of, Score.customer_id)
        if as_of is not None:
            stmt = stmt.where(Score.as_of == as_of)
        with self._connect() as conn:
            return read_frame(conn, stmt, STORED_SCORES_SCHEMA)

    def latest_score(self, customer_id: str) -> dict[str, Any] | None:
        """The learner's last stored score row: one query on the (customer_id, as_of) key."""
        stmt = select(*Score.__table__.columns).where(Score.customer_id == customer_id)
        with self._connect() as conn:
            return first_mapping(conn, stmt.order_by(Score.as_of.desc()).limit(1))

    # ---- writes ------------------------------------------------------------------------------

    def set_override(
        self,
        customer_id: str,
        tag: str,
        *,
        actor: str,
        reason: str,
        expires: date | None,
        now: datetime,
    ) -> None:
        """Pin a learner's tag by hand: override row, transition and status in one transaction.

        Raises:
            ValueError: unknown tag, empty actor or reason, naive ``now``, ``expires`` not after
                today, a learner the store does not know, or an ST_006 learner moved anywhere
                but ST_001/ST_005.
        """
        check_override_request(tag, actor=actor, reason=reason, expires=expires, now=now)
        override = {
            "customer_id": customer_id,
            "tag": tag,
            "actor": actor.strip(),
            "reason": reason.strip(),
            "kind": CAMPAIGN_KIND if tag == MANUAL_ONLY_TAG else HOLD_KIND,
            "created_at": now,
            "effective_as_of": now.astimezone(UTC).date(),
            "expires": expires,
        }
        with self._writer() as conn:
            from_tag = conn.execute(
                select(Status.tag).where(Status.customer_id == customer_id)
            ).scalar_one_or_none()
            check_override_target(customer_id, from_tag, tag)
            write_override(conn, override, from_tag)

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
        require_aware(now, "now")
        if not run_id.strip():
            raise ValueError("run_id is empty")
        batch = _Batch(as_of, run_id, model_version, rules_only, now, replace)
        checked = checked_decisions(as_of, decisions)
        rows = score_rows(as_of, checked, scores, run_id, model_version)
        existing = self._claim_run(batch)
        if existing is not None:
            return existing
        try:
            with self._writer() as conn:
                return self._write_batch(conn, batch, checked, rows)
        except Exception as error:
            self._mark_failed(as_of, error)
            raise

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
            tags = read_tags_of(conn, checked["customer_id"].tolist())
            plan = plan_transitions(checked, tags, active_override_ids(conn, as_of))
            rows = transition_rows(plan.applied, run_id, model_version, now)
            bulk_insert(conn, Transition.__table__, rows)
            update_status_from_run(conn, run_id)
            clear_overrides_of_churned(conn, run_id, now)
        outcomes: dict[str, str | None] = dict.fromkeys(plan.applied["customer_id"])
        for reason, skipped in plan.skipped.items():
            outcomes.update(dict.fromkeys(skipped, reason))
        return AppliedResult(run_id=run_id, outcomes=outcomes)

    def _claim_run(self, batch: _Batch) -> RunRecord | None:
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
        self, conn: Connection, batch: _Batch, decisions: pd.DataFrame, scores: pd.DataFrame
    ) -> RunRecord:
        """The batch transaction: re-check the day, then write everything and complete the run."""
        existing = existing_run(conn, batch.as_of, batch.replace)
        if existing is not None and not batch.replace:
            return existing  # another process completed the day while we waited for the lock
        if existing is not None:
            undo_run(conn, existing, batch.now)
        plan = plan_transitions(decisions, read_tags(conn), active_override_ids(conn, batch.as_of))
        bulk_insert(conn, Score.__table__, scores)
        transitions = transition_rows(plan.applied, batch.run_id, batch.model_version, batch.now)
        bulk_insert(conn, Transition.__table__, transitions)
        update_status_from_run(conn, batch.run_id)
        clear_overrides_of_churned(conn, batch.run_id, batch.now)
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
