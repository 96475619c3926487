"""The reads of ``StateStore`` (``serving.infra.store``): state, history, runs, audit log, scores
and overrides, each a frame checked against its schema (``serving.core.frames``) or a few plain
rows for the service's hot path. Scores come from SQL, or from the day's parquet files
(``serving.infra.score_files``) when the store has a scores directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Select, exists, func, select

from serving.core.frames import (
    DAY,
    OVERRIDES_COLUMNS,
    RUNS_COLUMNS,
    STATE_COLUMNS,
    STORED_SCORES_COLUMNS,
    TRANSITIONS_COLUMNS,
    is_in,
    sorted_by_id,
    state_frame_of_rows,
    stored_frame,
)
from serving.core.problems import Unavailable
from serving.core.state import StateRow, state_row
from serving.infra.arrow_reads import driver_table, read_table
from serving.infra.audit_log import read_transitions
from serving.infra.score_files import learner_row, read_scores, score_file
from serving.infra.sql import (
    driver_frame,
    first_mapping,
    read_frame,
    result_frame,
    transitions_select,
)
from serving.infra.state_sql import (
    STATE_ROWS,
    StateMark,
    changed_since,
    overrides_select,
    sorts_as_python,
    state_mark,
    state_select,
    undone_since,
)
from serving.infra.tables import BatchRun, Override, Score, Status, Transition


class StateChanges(NamedTuple):
    """The learners whose state may have changed since a ``state_mark`` (``ids``) and their
    state rows now (``fresh``, in customer_id order; a learner without a status has none):
    ``ReadsMixin.state_changes``."""

    ids: pd.Series
    fresh: pd.DataFrame

    def applied_to(self, before: pd.DataFrame) -> pd.DataFrame:
        """``before``, a ``state_frame`` read after the mark, with these changes: the state now."""
        if self.ids.empty:
            return before.copy()  # a frame of its own, as a read gives
        fresh = self.fresh if len(self.fresh) else before.iloc[:0]
        kept = before[~is_in(before["customer_id"], self.ids)]
        # Both parts are typed by _read_state already: the union needs no other pass.
        return sorted_by_id(pd.concat([kept, fresh], ignore_index=True))


class MarkedState(NamedTuple):
    """A ``state_frame`` and the ``state_mark`` taken before it (``ReadsMixin.state_after``)."""

    state: pd.DataFrame
    mark: StateMark


_STATE_SCHEMA = pa.schema(
    [
        (name, pa.date32() if kind == DAY else pa.string())
        for name, kind in STATE_COLUMNS.dtypes.items()
    ]
)
"""``state_select``'s columns as Arrow types (``arrow_reads``)."""


def _state_frame_of_table(table: pa.Table) -> pd.DataFrame:
    """The state frame of ``state_select``'s rows (``_STATE_SCHEMA``), typed as
    ``stored_frame`` types them: days ``datetime64[ns]`` (missing ones NaT), text ``str``
    (missing NaN)."""
    frame = {
        name: column.to_numpy(zero_copy_only=False).astype("datetime64[ns]")
        if STATE_COLUMNS.dtypes[name] == DAY
        else column.to_pandas().astype("str")
        for name, column in zip(table.column_names, table.columns, strict=True)
    }
    return pd.DataFrame(frame)


def _read_state(conn: Connection, stmt: Select[Any], *, alone: bool = False) -> pd.DataFrame:
    """The state frame of a ``state_select``: read ``alone`` (a snapshot of its own, by ADBC on
    a SQLite file: ``arrow_reads``) or in ``conn``'s transaction, beside its other reads."""
    read = read_table if alone else driver_table
    return _state_frame_of_table(read(conn, stmt, _STATE_SCHEMA))


class ReadsMixin:
    """Read methods of ``StateStore`` (which provides the connections)."""

    scores_dir: Path | None

    def _connect(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # StateStore's

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
            # The whole state (a million learners before a batch day) is read alone, by ADBC
            # on a SQLite file; a few learners' through the driver, their ids as parameters.
            return _read_state(conn, stmt, alone=customer_ids is None)

    def state_mark(self) -> StateMark:
        """Where the store stands now, for a later ``state_after`` of a state read after this."""
        with self._connect() as conn:
            return state_mark(conn)

    def state_changes(
        self, as_of: date, before: pd.DataFrame, mark: StateMark
    ) -> StateChanges | None:
        """What may differ in ``state_frame(as_of)`` now from ``before``, the ``state_frame(as_of)``
        read after ``mark`` was taken: the learners of ``state_sql.changed_since`` and their rows.

        None when the whole state is to be read instead: a first load (``before`` empty: every
        learner is new, and the whole state is read in half the time of the same rows by the
        changed ids, 180k learners: 0.44 against 0.87 s), a replace in between, or a database
        that does not sort ids as Python does (the frames are in ``customer_id`` order).
        """
        if before.empty:
            return None
        changed = changed_since(mark)
        with self._connect() as conn:
            if not sorts_as_python(conn):
                return None
            fresh = _read_state(conn, state_select(as_of, changed))
            ids = driver_frame(conn, changed)  # read again: as they are now
            # Checked after the reads: an undo until then reads everything again.
            if undone_since(conn, as_of, mark):
                return None
        learners = ids.iloc[:, 0].astype("str") if len(ids.columns) else pd.Series([], dtype="str")
        return StateChanges(learners, fresh)

    def state_after(self, as_of: date, before: pd.DataFrame, mark: StateMark) -> pd.DataFrame:
        """``state_frame(as_of)`` now, given ``before``, the ``state_frame(as_of)`` read after
        ``mark`` was taken: only the learners whose state may have changed since are read
        (``state_changes``).

        The batch reads the whole state before its day and again after the commit, for the
        answers; the commit moved a few thousand of the 200k learners.
        """
        return self.state_with(as_of, before, self.state_changes(as_of, before, mark))

    def state_with(
        self, as_of: date, before: pd.DataFrame, changes: StateChanges | None
    ) -> pd.DataFrame:
        """``state_after`` from what ``state_changes`` gave: ``before`` with the changes, or
        the whole state read again when it gave None."""
        return self.state_frame(as_of) if changes is None else changes.applied_to(before)

    def state_rows(self, customer_ids: Sequence[str], as_of: date) -> dict[str, StateRow]:
        """``state_frame(as_of, customer_ids)`` as ``StateRow`` tuples, in one indexed query.

        The service checks the learners of each request against the state its precomputed
        answers were decided on (``serving.app.answers``); a frame and its checks would cost
        more than the whole answer. The query is the same select, compiled once.

        Returns:
            customer_id -> (tag, since, override_tag, override_expires) for the learners that
            have a status; the override columns are None without an override applying on as_of.
        """
        return {row[0]: state_row(*row[1:5]) for row in self._state_tuples(customer_ids, as_of)}

    def state_of(self, customer_ids: Sequence[str], as_of: date) -> pd.DataFrame:
        """``state_frame(as_of, customer_ids)`` of a few learners, without its pandera pass.

        The online scorer reads the state of each request's learners: the compiled query of
        ``state_rows`` costs ~0.1 ms, the frame's validation ~7 ms. The frame is the same
        (``state_frame_of_rows``).
        """
        return state_frame_of_rows(self._state_tuples(customer_ids, as_of))

    def _state_tuples(self, customer_ids: Sequence[str], as_of: date) -> list[tuple]:
        """The rows of ``STATE_ROWS`` for these learners (none asked: no query)."""
        if not customer_ids:
            return []
        parameters = {"customer_ids": list(customer_ids), "as_of": as_of}
        with self._connect() as conn:
            return [tuple(row) for row in conn.execute(STATE_ROWS, parameters)]

    def history(self, customer_id: str) -> pd.DataFrame:
        """One learner's transitions, oldest first (``TRANSITIONS_SCHEMA``; empty if unknown)."""
        stmt = transitions_select().where(Transition.customer_id == customer_id)
        with self._connect() as conn:
            return read_frame(conn, stmt, TRANSITIONS_COLUMNS)

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
            return read_frame(conn, stmt, RUNS_COLUMNS)

    def completed_run(self, as_of: date) -> dict[str, Any] | None:
        """The completed run of ``as_of`` (``run_id``, ``model_version``, ``rules_only``), or
        None: one keyed read, where ``runs`` reads and types every run."""
        stmt = select(BatchRun.run_id, BatchRun.model_version, BatchRun.rules_only).where(
            BatchRun.as_of == as_of, BatchRun.status == "completed"
        )
        with self._connect() as conn:
            return first_mapping(conn, stmt)

    def audit_head(self) -> tuple[int | None, str | None, int, int]:
        """What changes whenever the stored history does: the last transition's id, the last
        completed run's id, the number of overrides and the number of cleared ones (two index
        reads and one pass over the overrides).

        A clear writes no transition and no override row (it updates one), so only the cleared
        count moves then; a row once cleared stays cleared, so the count never comes back.
        A reader that keeps frames of the store (the dashboard) reloads them when this changes.
        """
        last_run = (
            select(BatchRun.run_id)
            .where(BatchRun.status == "completed")
            .order_by(BatchRun.as_of.desc(), BatchRun.run_id.desc())
            .limit(1)
        )
        with self._connect() as conn:
            last_id = conn.execute(select(func.max(Transition.id))).scalar()
            run_id = conn.execute(last_run).scalar()
            overrides, cleared = conn.execute(
                select(func.count(), func.count(Override.cleared_at)).select_from(Override)
            ).one()
        return last_id, run_id, int(overrides or 0), int(cleared or 0)

    def transitions_frame(
        self, until: date | None = None, *, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The audit log in append order, up to and including ``as_of == until`` when given,
        only ``columns`` when given (a million learners' log is ~340 MB as pandas, 180 of them
        the ``why`` and ``reason`` texts)."""
        stmt = transitions_select(columns)
        if until is not None:
            stmt = stmt.where(Transition.as_of <= until)
        with self._connect() as conn:
            return read_transitions(conn, stmt)  # typed by the column, not by the row

    def scores_frame(
        self,
        as_of: date | None = None,
        *,
        columns: Sequence[str] | None = None,
        learners: Callable[[date], pa.Array] | None = None,
    ) -> pd.DataFrame:
        """Stored scores (``STORED_SCORES_SCHEMA``), of one day when ``as_of`` is given, and
        only ``columns`` when given, in that order: every day's scores (learners x days rows) cost
        by the column, and the KPIs need a third of them.

        With a scores directory, each completed day's rows come from its run's file, or from SQL
        for a day stored before (``serving.infra.score_files``); the frame is the same.

        Args:
            as_of: the day (None: every completed day).
            columns: the columns (None: all).
            learners: the ids whose rows to keep of each day (None: every learner's): a day's
                file is filtered as it is read, so rows left out never become pandas.

        Raises:
            Unavailable: a completed day's scores are neither in a file nor in SQL (a missing
                file, or a store opened without the scores directory its days were written to).
        """
        schema = STORED_SCORES_COLUMNS
        if columns is not None:
            schema = schema.select(list(columns))
        files, sql_days = self._score_sources(as_of)
        paths = [path for _, path in files]
        kept = None if learners is None else [learners(day) for day, _ in files]
        if not paths:
            return stored_frame(self._sql_scores(as_of, columns, learners=learners), schema)
        if not sql_days:
            return stored_frame(read_scores(paths, columns, kept), schema)
        # Days of both kinds: each read with its keys, so that the union sorts as SQL would.
        keyed = None if columns is None else list(dict.fromkeys(["as_of", "customer_id", *columns]))
        from_sql = self._sql_scores(as_of, keyed, only_days=sql_days, learners=learners)
        from_sql["as_of"] = pd.to_datetime(from_sql["as_of"]).astype("datetime64[us]")
        both = pd.concat([read_scores(paths, keyed, kept), from_sql], ignore_index=True)
        both = both.sort_values(["as_of", "customer_id"], ignore_index=True)
        return stored_frame(both if columns is None else both[list(columns)], schema)

    def latest_score(self, customer_id: str) -> dict[str, Any] | None:
        """The learner's last stored score row: one query on the (customer_id, as_of) key, and
        with a scores directory the newer days' files, newest first, until one has the learner."""
        files, _ = self._score_sources(None)
        stmt = select(*Score.__table__.columns).where(Score.customer_id == customer_id)
        with self._connect() as conn:
            in_sql = first_mapping(conn, stmt.order_by(Score.as_of.desc()).limit(1))
        for day, path in reversed(files):
            if in_sql is not None and day <= in_sql["as_of"]:
                break
            row = learner_row(path, customer_id)
            if row is not None:
                return row
        return in_sql

    def _sql_scores(
        self,
        as_of: date | None,
        columns: Sequence[str] | None,
        only_days: Sequence[date] | None = None,
        learners: Callable[[date], pa.Array] | None = None,
    ) -> pd.DataFrame:
        """Score rows in SQL (of ``only_days`` when given, of each day's ``learners`` when
        given), by day and learner."""
        table = Score.__table__.columns
        chosen = list(table) if columns is None else [table[name] for name in columns]
        names = [column.name for column in chosen]
        if learners is not None:  # the filter needs the keys; the caller's columns are returned
            chosen = [table[name] for name in dict.fromkeys(["as_of", "customer_id", *names])]
        stmt = select(*chosen).order_by(Score.as_of, Score.customer_id)
        if as_of is not None:
            stmt = stmt.where(Score.as_of == as_of)
        if only_days is not None:
            stmt = stmt.where(Score.as_of.in_(list(only_days)))
        with self._connect() as conn:
            frame = result_frame(conn.execute(stmt))
        if learners is None:
            return frame
        days = pd.to_datetime(frame["as_of"]).dt.date
        kept = np.zeros(len(frame), dtype=bool)
        for day in days.unique():
            on_day = (days == day).to_numpy()
            kept[on_day] = is_in(frame.loc[on_day, "customer_id"], learners(day))
        return frame.loc[kept, names].reset_index(drop=True)

    def _score_sources(self, as_of: date | None) -> tuple[list[tuple[date, Path]], list[date]]:
        """The completed days (``as_of`` only, when given), oldest first, split into the days
        whose run has a scores file (with it) and the days stored in SQL.

        Raises:
            Unavailable: a day's run recorded scores, but neither a file nor SQL holds them.
        """
        # One index seek per day (a DISTINCT over the scores table would scan all its rows).
        in_sql = exists().where(Score.as_of == BatchRun.as_of)
        runs = select(BatchRun.as_of, BatchRun.run_id, BatchRun.summary, in_sql).where(
            BatchRun.status == "completed"
        )
        if as_of is not None:
            runs = runs.where(BatchRun.as_of == as_of)
        with self._connect() as conn:
            completed = conn.execute(runs.order_by(BatchRun.as_of)).all()
        files, sql_days = [], []
        for day, run_id, summary, day_in_sql in completed:
            path = None if self.scores_dir is None else score_file(self.scores_dir, day, run_id)
            if path is not None and path.exists():
                files.append((day, path))
            elif day_in_sql:
                sql_days.append(day)
            elif (summary or {}).get("scores", 0):
                raise Unavailable(_missing_scores(day, run_id, path))
        return files, sql_days

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
            return read_frame(conn, overrides_select(customer_id, live_from), OVERRIDES_COLUMNS)


def day_learners(
    frame: pd.DataFrame, day_column: str = "as_of", *, or_later: bool = False
) -> Callable[[date], pa.Array]:
    """``scores_frame``'s ``learners`` for the rows of ``frame``: per day, the ``customer_id``s
    of its rows whose ``day_column`` is that day (a move's day, a message's planned day), or
    that day or a later one when ``or_later``."""
    ids = pa.array(frame["customer_id"].astype(str).to_numpy(dtype=object), pa.string())
    days = pd.to_datetime(frame[day_column]).to_numpy("datetime64[D]")

    def of(day: date) -> pa.Array:
        at = np.datetime64(day, "D")
        return ids.filter(pa.array(days >= at if or_later else days == at))

    return of


def _missing_scores(day: date, run_id: str, path: Path | None) -> str:
    """Why a completed day has no scores to read, and what to do."""
    if path is None:
        return (
            f"scores of {day} (run {run_id}) are not in SQL: this store was opened without the "
            "scores directory the day was written to (open it with StateStore.from_settings)"
        )
    return f"scores of {day} (run {run_id}): {path} is missing; restore it from a backup"


__all__ = ["MarkedState", "ReadsMixin", "StateChanges", "day_learners"]
