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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import is_bool_dtype, is_float_dtype
from sqlalchemy import (
    BindParameter,
    Connection,
    Date,
    Engine,
    Result,
    Select,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from serving.settings import Settings, utc_now
from serving.store_models import (
    CHURNED_TAG,
    DECISIONS_SCHEMA,
    MANUAL_ONLY_TAG,
    RUNS_SCHEMA,
    SCORES_INPUT_SCHEMA,
    SCORES_SCHEMA,
    STATE_SCHEMA,
    STATUS_TAGS,
    TAGS_AFTER_CHURN,
    TRANSITIONS_SCHEMA,
    BatchRun,
    Override,
    RunRecord,
    Score,
    Status,
    Transition,
    validate_frame,
)

MIGRATIONS_LOCATION = "serving:migrations"
SQLITE_BUSY_TIMEOUT_S = 120
"""How long a SQLite writer waits for another writer (a 1M-row batch commits in well under this)."""
_ADVISORY_LOCK_CLASS = 0x15_7E_90  # first key of pg_advisory_xact_lock: "lstep state store"
_CHUNK_ROWS = 50_000
_EXAMPLES = 10
_WRITER_OPTION = "lstep_writer"
_MANUAL_SIGNAL = "manual"
_MODEL_SCORE_COLUMNS = ("customer_id", "p_churn", "p_low", "p_high", "confidence")


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
class _TransitionPlan:
    """Which changed decisions become transitions, and which were skipped and why."""

    applied: pd.DataFrame
    skipped: dict[str, list[str]]


class ApplyRefused(ValueError):
    """Moves cannot be written on that day (it is before the latest completed batch day)."""


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
        self._engine = _create_engine(url)
        if auto_migrate:
            self.migrate()

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        """Open the store named by ``settings.state_database_url`` (SQLite under LSTEP_HOME)."""
        return cls(settings.state_database_url)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    def state_frame(self, as_of: date | None = None) -> pd.DataFrame:
        """Current tag per learner with the open override, if any (``STATE_SCHEMA``).

        Args:
            as_of: when given, overrides that expired by then (``expires <= as_of``) are left
                out; without it every uncleared override is returned with its ``expires``.
        """
        stmt = _state_select(as_of).order_by(Status.customer_id)
        with self._engine.connect() as conn:
            return _read_frame(conn, stmt, STATE_SCHEMA)

    def state_rows(
        self, customer_ids: Sequence[str], as_of: date
    ) -> dict[str, tuple[str, date, str | None, date | None]]:
        """``state_frame(as_of)`` rows of a few learners as plain tuples, in one indexed query.

        The service checks the learners of each request against the state its precomputed
        answers were decided on (``serving.answers``); a frame and its checks would cost more
        than the whole answer.

        Returns:
            customer_id -> (tag, since, override_tag, override_expires) for the learners that
            have a status; the override columns are None without an override active on as_of.
        """
        if not customer_ids:
            return {}
        parameters = {"customer_ids": list(customer_ids), "as_of": as_of}
        with self._engine.connect() as conn:
            return {row[0]: tuple(row[1:]) for row in conn.execute(_STATE_ROWS, parameters)}

    def history(self, customer_id: str) -> pd.DataFrame:
        """One learner's transitions, oldest first (``TRANSITIONS_SCHEMA``; empty if unknown)."""
        stmt = _transitions_select().where(Transition.customer_id == customer_id)
        with self._engine.connect() as conn:
            return _read_frame(conn, stmt, TRANSITIONS_SCHEMA)

    def current(self, customer_id: str) -> dict[str, Any] | None:
        """A learner's status row plus their open override (``override`` is None without one)."""
        with self._engine.connect() as conn:
            status = _first_mapping(
                conn, select(*Status.__table__.columns).where(Status.customer_id == customer_id)
            )
            if status is None:
                return None
            override = _first_mapping(
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
        with self._engine.connect() as conn:
            return _read_frame(conn, stmt, RUNS_SCHEMA)

    def transitions_frame(self, until: date | None = None) -> pd.DataFrame:
        """The audit log in append order, up to and including ``as_of == until`` when given."""
        stmt = _transitions_select()
        if until is not None:
            stmt = stmt.where(Transition.as_of <= until)
        with self._engine.connect() as conn:
            return _read_frame(conn, stmt, TRANSITIONS_SCHEMA)

    def scores_frame(self, as_of: date | None = None) -> pd.DataFrame:
        """Stored scores, of one day when ``as_of`` is given (``SCORES_SCHEMA``)."""
        stmt = select(*Score.__table__.columns).order_by(Score.as_of, Score.customer_id)
        if as_of is not None:
            stmt = stmt.where(Score.as_of == as_of)
        with self._engine.connect() as conn:
            return _read_frame(conn, stmt, SCORES_SCHEMA)

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
        _check_override_request(tag, actor=actor, reason=reason, expires=expires, now=now)
        override = {
            "customer_id": customer_id,
            "tag": tag,
            "actor": actor.strip(),
            "reason": reason.strip(),
            "created_at": now,
            "expires": expires,
        }
        with self._writer() as conn:
            from_tag = conn.execute(
                select(Status.tag).where(Status.customer_id == customer_id)
            ).scalar_one_or_none()
            _check_override_target(customer_id, from_tag, tag)
            _write_override(conn, override, from_tag)

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
        _require_aware(now, "now")
        if not run_id.strip():
            raise ValueError("run_id is empty")
        batch = _Batch(as_of, run_id, model_version, rules_only, now, replace)
        checked = _checked_decisions(as_of, decisions)
        score_rows = _score_rows(as_of, checked, scores, run_id, model_version)
        existing = self._claim_run(batch)
        if existing is not None:
            return existing
        try:
            with self._writer() as conn:
                return self._write_batch(conn, batch, checked, score_rows)
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
        _require_aware(now, "now")
        if not run_id.strip():
            raise ValueError("run_id is empty")
        checked = _checked_decisions(as_of, decisions)
        with self._writer() as conn:
            latest = _latest_completed(conn)
            if latest is not None and as_of < latest:
                raise ApplyRefused(
                    f"as_of {as_of} is before the latest batch day ({latest}): moves are "
                    "applied on or after it, as batches are"
                )
            tags = _read_tags_of(conn, checked["customer_id"].tolist())
            plan = _plan_transitions(checked, tags, _active_override_ids(conn, as_of))
            rows = _transition_rows(plan.applied, run_id, model_version, now)
            _bulk_insert(conn, Transition.__table__, rows)
            _update_status_from_run(conn, run_id)
            _clear_overrides_of_churned(conn, run_id, now)
        outcomes: dict[str, str | None] = dict.fromkeys(plan.applied["customer_id"])
        for reason, skipped in plan.skipped.items():
            outcomes.update(dict.fromkeys(skipped, reason))
        return AppliedResult(run_id=run_id, outcomes=outcomes)

    def _claim_run(self, batch: _Batch) -> RunRecord | None:
        """Return the completed record to reuse, or mark the day ``running`` and return None."""
        with self._writer() as conn:
            _check_run_id_free(conn, batch.run_id, batch.as_of)
            existing = _existing_run(conn, batch.as_of, batch.replace)
            if existing is not None:
                # A completed day stays ``completed`` during a replace: its data is intact
                # until the replacing transaction commits.
                return None if batch.replace else existing
            _upsert_run(conn, batch.run_values("running"))
        return None

    def _write_batch(
        self, conn: Connection, batch: _Batch, decisions: pd.DataFrame, score_rows: pd.DataFrame
    ) -> RunRecord:
        """The batch transaction: re-check the day, then write everything and complete the run."""
        existing = _existing_run(conn, batch.as_of, batch.replace)
        if existing is not None and not batch.replace:
            return existing  # another process completed the day while we waited for the lock
        if existing is not None:
            _undo_run(conn, existing, batch.now)
        plan = _plan_transitions(
            decisions, _read_tags(conn), _active_override_ids(conn, batch.as_of)
        )
        _bulk_insert(conn, Score.__table__, score_rows)
        transitions = _transition_rows(plan.applied, batch.run_id, batch.model_version, batch.now)
        _bulk_insert(conn, Transition.__table__, transitions)
        _update_status_from_run(conn, batch.run_id)
        _clear_overrides_of_churned(conn, batch.run_id, batch.now)
        values = batch.run_values("completed", self._clock(), _summary(decisions, score_rows, plan))
        _upsert_run(conn, values)
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
    def _writer(self) -> Iterator[Connection]:
        """A transaction that holds the store's single-writer lock until it ends."""
        with self._engine.connect() as conn:
            conn.execution_options(**{_WRITER_OPTION: True})
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


# ---- engine ----------------------------------------------------------------------------------


def _create_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writers."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself: pysqlite's own implicit BEGIN is
    # deferred and would let two writers both start and one fail with "database is locked".
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB of page cache: index inserts of a million-row batch stop thrashing the default 2 MiB.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def _begin_sqlite_transaction(conn: Connection) -> None:
    writer = conn.get_execution_options().get(_WRITER_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


# ---- reading helpers -------------------------------------------------------------------------


def _read_frame(conn: Connection, stmt: Select[Any], schema: pa.DataFrameSchema) -> pd.DataFrame:
    result = conn.execute(stmt)
    return validate_frame(_result_frame(result), schema)


def _result_frame(result: Result[Any]) -> pd.DataFrame:
    # pandas reads plain tuples ten times faster than SQLAlchemy Row objects.
    rows = [tuple(row) for row in result]
    return pd.DataFrame.from_records(rows, columns=list(result.keys()))


def _transitions_select() -> Select[Any]:
    return select(*Transition.__table__.columns).order_by(Transition.id)


def _state_select(as_of: date | BindParameter[date] | None) -> Select[Any]:
    """Each learner's status with the override open (and, given ``as_of``, active) on as_of."""
    return select(
        Status.customer_id,
        Status.tag,
        Status.since,
        Override.tag.label("override_tag"),
        Override.expires.label("override_expires"),
    ).outerjoin(
        Override,
        (Override.customer_id == Status.customer_id) & _override_active(as_of),
    )


def _override_active(as_of: date | BindParameter[date] | None) -> Any:
    """SQL condition: the override is open (and, given ``as_of``, not expired by then)."""
    condition = Override.cleared_at.is_(None)
    if as_of is not None:
        condition = condition & or_(Override.expires.is_(None), Override.expires > as_of)
    return condition


_STATE_ROWS = _state_select(bindparam("as_of", type_=Date)).where(
    Status.customer_id.in_(bindparam("customer_ids", expanding=True))
)
"""``state_rows``' query, built once: SQLAlchemy then reuses its compiled form (~1 ms a call)."""


def _first_mapping(conn: Connection, stmt: Select[Any]) -> dict[str, Any] | None:
    row = conn.execute(stmt).first()
    return None if row is None else dict(row._mapping)


def _read_tags(conn: Connection) -> pd.DataFrame:
    return _result_frame(conn.execute(select(Status.customer_id, Status.tag.label("db_tag"))))


def _read_tags_of(conn: Connection, customer_ids: list[str]) -> pd.DataFrame:
    """``_read_tags`` for some learners only (a few requested ones, not the whole table)."""
    stmt = select(Status.customer_id, Status.tag.label("db_tag")).where(
        Status.customer_id.in_(customer_ids)
    )
    frame = _result_frame(conn.execute(stmt))
    return frame if len(frame.columns) else pd.DataFrame(columns=["customer_id", "db_tag"])


def _active_override_ids(conn: Connection, as_of: date) -> set[str]:
    stmt = select(Override.customer_id).where(_override_active(as_of))
    return set(conn.execute(stmt).scalars())


def _latest_completed(conn: Connection) -> date | None:
    return conn.execute(
        select(func.max(BatchRun.as_of)).where(BatchRun.status == "completed")
    ).scalar_one()


def _check_run_id_free(conn: Connection, run_id: str, as_of: date) -> None:
    other_day = conn.execute(
        select(BatchRun.as_of).where(BatchRun.run_id == run_id, BatchRun.as_of != as_of)
    ).scalar_one_or_none()
    if other_day is not None:
        raise ValueError(f"run_id {run_id!r} already names the batch of {other_day}")


def _existing_run(conn: Connection, as_of: date, replace: bool) -> RunRecord | None:
    """The completed run of ``as_of``, after checking that the day may be (re)run at all."""
    latest = _latest_completed(conn)
    row = _first_mapping(
        conn,
        select(*BatchRun.__table__.columns).where(
            BatchRun.as_of == as_of, BatchRun.status == "completed"
        ),
    )
    if row is None:
        if latest is not None and as_of < latest:
            raise ValueError(
                f"as_of {as_of} is before the latest completed batch ({latest}): "
                "batches must move forward in time"
            )
        return None
    if replace and as_of != latest:
        raise ValueError(
            f"replace is allowed only for the latest completed as_of ({latest}), not {as_of}"
        )
    return RunRecord(**row)


# ---- validation ------------------------------------------------------------------------------


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name}={moment.isoformat()} is naive: pass a timezone-aware datetime")


def _examples(values: pd.Series) -> list[str]:
    return [str(value) for value in values.head(_EXAMPLES)]


def _checked_decisions(as_of: date, decisions: pd.DataFrame) -> pd.DataFrame:
    """The validated decisions of ``as_of``; changed rows must say where to and why."""
    checked = validate_frame(decisions, DECISIONS_SCHEMA)
    other_day = checked[checked["as_of"] != pd.Timestamp(as_of)]
    if len(other_day):
        raise ValueError(
            f"decisions: {len(other_day)} rows have an as_of other than {as_of} "
            f"(e.g. {_examples(other_day['as_of'].dt.date)})"
        )
    changed = checked[checked["changed"]]
    for column in ("to_tag", "rule_id", "description"):
        missing = changed[changed[column].isna()]
        if len(missing):
            raise ValueError(
                f"decisions: {len(missing)} changed rows have no {column} "
                f"(customers {_examples(missing['customer_id'])})"
            )
    manual_only = changed[changed["to_tag"] == MANUAL_ONLY_TAG]
    if len(manual_only):
        raise ValueError(
            f"decisions: {len(manual_only)} rows move learners to {MANUAL_ONLY_TAG}, which only "
            f"a person may set (customers {_examples(manual_only['customer_id'])})"
        )
    return checked


def _check_override_request(
    tag: str, *, actor: str, reason: str, expires: date | None, now: datetime
) -> None:
    if tag not in STATUS_TAGS:
        raise ValueError(f"unknown tag {tag!r}: expected one of {', '.join(STATUS_TAGS)}")
    if not actor or not actor.strip():
        raise ValueError("an override needs an actor: who decided it")
    if not reason or not reason.strip():
        raise ValueError("an override needs a reason: why the tag is set by hand")
    _require_aware(now, "now")
    today = now.astimezone(UTC).date()
    if expires is not None and expires <= today:
        raise ValueError(f"expires {expires} is not after today ({today})")


def _check_override_target(customer_id: str, from_tag: str | None, tag: str) -> None:
    if from_tag is None:
        raise ValueError(f"unknown customer {customer_id!r}: the store has no status for them")
    if from_tag == CHURNED_TAG and tag not in TAGS_AFTER_CHURN:
        raise ValueError(
            f"customer {customer_id!r} is {CHURNED_TAG} (churned): a person may move them back "
            f"only to {' or '.join(sorted(TAGS_AFTER_CHURN))}, not {tag}"
        )


# ---- planning (pure) -------------------------------------------------------------------------


def _score_rows(
    as_of: date,
    decisions: pd.DataFrame,
    scores: pd.DataFrame | None,
    run_id: str,
    model_version: str | None,
) -> pd.DataFrame:
    """One ``scores`` row per decision; the model frame adds the interval ``p_low``/``p_high``."""
    model = validate_frame(
        scores if scores is not None else pd.DataFrame(columns=list(_MODEL_SCORE_COLUMNS)),
        SCORES_INPUT_SCHEMA,
    )
    off_day = model[model["as_of"] != pd.Timestamp(as_of)] if "as_of" in model else model[:0]
    if len(off_day):
        raise ValueError(
            f"scores: {len(off_day)} rows have an as_of other than {as_of} "
            f"(customers {_examples(off_day['customer_id'])})"
        )
    # An outer merge finds scores without a decision; Series.isin against a million
    # ids is pathologically slow for pandas' Arrow-backed strings.
    rows = decisions.merge(
        model.drop(columns="as_of", errors="ignore"),
        on="customer_id",
        how="outer",
        suffixes=("", "_model"),
        indicator=True,
    )
    undecided = rows[rows["_merge"] == "right_only"]
    if len(undecided):
        raise ValueError(
            f"scores: {len(undecided)} customers have a score but no decision "
            f"(e.g. {_examples(undecided['customer_id'])})"
        )
    for column in ("p_churn", "confidence"):  # what the rules used wins; the model fills gaps
        rows[column] = rows[column].fillna(rows[f"{column}_model"])
    rows["as_of"] = as_of
    rows["model_version"] = model_version
    rows["run_id"] = run_id
    return rows[[column.name for column in Score.__table__.columns]]


def _plan_transitions(
    decisions: pd.DataFrame, current_tags: pd.DataFrame, overridden: set[str]
) -> _TransitionPlan:
    """Keep the changed decisions that still apply to the state read inside the transaction."""
    changed = decisions[decisions["changed"]].merge(current_tags, on="customer_id", how="left")
    to_churn = changed["to_tag"] == CHURNED_TAG
    already_churned = to_churn & (changed["db_tag"] == CHURNED_TAG)
    # To ST_006 is a fact (30 days without events): it passes overrides and state changes.
    is_overridden = changed["customer_id"].isin(overridden) & ~to_churn
    is_stale = (changed["from_tag"].fillna("") != changed["db_tag"].fillna("")) & ~(
        to_churn | is_overridden
    )
    skipped = {
        "overridden": is_overridden,
        "stale_from_tag": is_stale,
        "already_churned": already_churned,
    }
    applied = changed[~(is_overridden | is_stale | already_churned)].copy()
    applied["from_tag"] = applied["db_tag"]  # the tag actually left, for the audit log
    return _TransitionPlan(
        applied=applied,
        skipped={
            reason: changed.loc[mask, "customer_id"].tolist() for reason, mask in skipped.items()
        },
    )


def _transition_rows(
    applied: pd.DataFrame, run_id: str, model_version: str | None, now: datetime
) -> pd.DataFrame:
    rows = applied.rename(columns={"description": "reason"})
    rows["as_of"] = rows["as_of"].dt.date
    rows["actor"] = None
    rows["model_version"] = model_version
    rows["run_id"] = run_id
    rows["created_at"] = now
    columns = [column.name for column in Transition.__table__.columns if column.name != "id"]
    return rows[columns]


def _summary(
    decisions: pd.DataFrame, score_rows: pd.DataFrame, plan: _TransitionPlan
) -> dict[str, Any]:
    """What the run did, for ``batch_runs.summary``: counts, and examples of skipped learners."""
    held_counts = decisions["held"].value_counts()
    return {
        "decisions": len(decisions),
        "scores": len(score_rows),
        "changed_decisions": int(decisions["changed"].sum()),
        "held": {str(reason): int(count) for reason, count in held_counts.items()},
        "transitions": len(plan.applied),
        "transitions_by_tag": {
            str(tag): int(count) for tag, count in plan.applied["to_tag"].value_counts().items()
        },
        "skipped": {reason: len(ids) for reason, ids in plan.skipped.items()},
        "skipped_examples": {
            reason: ids[:_EXAMPLES] for reason, ids in plan.skipped.items() if ids
        },
    }


# ---- writing helpers -------------------------------------------------------------------------


def _driver_rows(conn: Connection, table: Table, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows as the DBAPI driver takes them: None for missing values, column types applied.

    Each column's SQLAlchemy bind processor (dates to text on SQLite, UTC for instants) runs
    once per distinct value rather than once per row: batch columns such as ``as_of`` or
    ``created_at`` hold one value for a million rows.
    """
    columns = []
    for name in frame.columns:
        series = frame[name]
        processor = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        # Python floats and bools are what every driver takes already.
        if processor is None or is_float_dtype(series.dtype) or is_bool_dtype(series.dtype):
            columns.append(series.to_numpy(dtype=object, na_value=None).tolist())
            continue
        codes, distinct = pd.factorize(series)  # missing values get code -1
        lookup = [processor(value) for value in distinct.to_numpy(dtype=object)] + [None]
        columns.append(np.asarray(lookup, dtype=object)[codes].tolist())
    return list(zip(*columns, strict=True))


def _bulk_insert(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    """Insert a frame of ``table`` columns: COPY on PostgreSQL, driver executemany elsewhere."""
    if frame.empty:
        return
    columns = list(frame.columns)
    # Key order makes the primary-key and customer_id index inserts sequential.
    rows = _driver_rows(conn, table, frame.sort_values("customer_id"))
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, table.name, columns, rows)
        return
    insert_sql = str(table.insert().compile(dialect=conn.dialect, column_keys=columns))
    for start in range(0, len(rows), _CHUNK_ROWS):
        conn.exec_driver_sql(insert_sql, rows[start : start + _CHUNK_ROWS])


def _copy_rows(
    conn: Connection, table_name: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """COPY rows in PostgreSQL's binary format (about four times faster than text here)."""
    from psycopg import sql  # PostgreSQL only

    cursor = conn.connection.driver_connection.cursor()
    # Binary COPY needs each column's exact type: ask the server rather than guess.
    type_oids = dict(
        cursor.execute(
            "SELECT attname, atttypid FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table_name],
        ).fetchall()
    )
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table_name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cursor, cursor.copy(copy_sql) as copy:
        copy.set_types([type_oids[column] for column in columns])
        for row in rows:
            copy.write_row(row)


def _update_status_from_run(conn: Connection, run_id: str) -> None:
    """Set each learner the run moved to the tag of their transition in it (one statement)."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    moves = select(
        Transition.customer_id,
        Transition.to_tag,
        Transition.as_of,
        Transition.created_at,
        Transition.run_id,
    ).where(Transition.run_id == run_id)  # a WHERE also keeps SQLite's upsert parser happy
    statement = dialect_insert(Status).from_select(
        ["customer_id", "tag", "since", "updated_at", "run_id"], moves
    )
    statement = statement.on_conflict_do_update(
        index_elements=[Status.customer_id],
        set_={name: statement.excluded[name] for name in ("tag", "since", "updated_at", "run_id")},
    )
    conn.execute(statement)


def _write_override(conn: Connection, override: dict[str, Any], from_tag: str) -> None:
    """Close the learner's open override, open this one, log the move and set the status."""
    customer_id, now = override["customer_id"], override["created_at"]
    today = now.astimezone(UTC).date()  # the day a person acted is the day the tag starts
    conn.execute(
        update(Override)
        .where(Override.customer_id == customer_id, Override.cleared_at.is_(None))
        .values(cleared_at=now)
    )
    conn.execute(Override.__table__.insert().values(**override))
    conn.execute(
        Transition.__table__.insert().values(
            customer_id=customer_id,
            as_of=today,
            from_tag=from_tag,
            to_tag=override["tag"],
            actor=override["actor"],
            reason=override["reason"],
            signal=_MANUAL_SIGNAL,
            created_at=now,
        )
    )
    conn.execute(
        update(Status)
        .where(Status.customer_id == customer_id)
        .values(tag=override["tag"], since=today, updated_at=now, run_id=None)
    )


def _clear_overrides_of_churned(conn: Connection, run_id: str, now: datetime) -> None:
    """Clear the open overrides that the run's moves to ST_006 passed.

    A churned learner's tag is a fact; an override left open beside it would contradict the
    stored tag (the rules engine refuses such a state).
    """
    churned = select(Transition.customer_id).where(
        Transition.run_id == run_id, Transition.to_tag == CHURNED_TAG
    )
    conn.execute(
        update(Override)
        .where(Override.cleared_at.is_(None), Override.customer_id.in_(churned))
        .values(cleared_at=now)
    )


def _upsert_run(conn: Connection, values: dict[str, Any]) -> None:
    """Write the one ``batch_runs`` row of ``values['as_of']``, replacing whatever was there."""
    conn.execute(delete(BatchRun).where(BatchRun.as_of == values["as_of"]))
    conn.execute(BatchRun.__table__.insert().values(**values))


def _undo_run(conn: Connection, run: RunRecord, now: datetime) -> None:
    """Delete a completed day's scores and automatic transitions and restore the prior tags."""
    moved = select(Transition.customer_id).where(Transition.run_id == run.run_id)
    kept = or_(Transition.run_id.is_(None), Transition.run_id != run.run_id)
    # Learners the run created have no earlier transition: they disappear with it.
    conn.execute(
        delete(Status).where(
            Status.customer_id.in_(moved),
            Status.customer_id.not_in(select(Transition.customer_id).where(kept)),
        )
    )

    def previous(column: Any) -> Any:
        # Correlated with the status row being updated: its latest transition that stays.
        return (
            select(column)
            .where(Transition.customer_id == Status.customer_id, kept)
            .order_by(Transition.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    conn.execute(
        update(Status)
        .where(Status.customer_id.in_(moved))
        .values(
            tag=previous(Transition.to_tag),
            since=previous(Transition.as_of),
            run_id=previous(Transition.run_id),
            updated_at=now,
        )
    )
    conn.execute(delete(Transition).where(Transition.run_id == run.run_id))
    conn.execute(delete(Score).where(Score.as_of == run.as_of))


__all__ = [
    "MIGRATIONS_LOCATION",
    "SQLITE_BUSY_TIMEOUT_S",
    "AppliedResult",
    "ApplyRefused",
    "StateStore",
    "utc_now",
]
