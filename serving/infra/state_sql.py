"""SQL of learners' state on a data day, and of overrides (``serving.infra.store``).

State is point-in-time: the state of a learner on data day D is their latest transition dated
on or before D (by ``as_of``, then id), and the override that applies on D. The ``status`` table
holds the latest transition of each learner, so for a day on or after a learner's ``since`` it
answers directly; only learners whose current tag began after D (a later batch day, or an
override dated ahead) are looked up in the audit log. A day before an override's effective day
therefore sees the learner as they were, which is what lets a backfill, a rerun or a dry run of
an earlier day run after overrides were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    BindParameter,
    Connection,
    Date,
    Select,
    bindparam,
    case,
    column,
    func,
    literal,
    or_,
    select,
    table,
    union,
    union_all,
    update,
)

from serving.core.planning import MANUAL_SIGNAL
from serving.core.tags import HOLD_KIND
from serving.infra.sql import driver_frame, holds_fewer_rows, temporary_table
from serving.infra.tables import BatchRun, Override, Status, Transition

Day = date | BindParameter[date]
_DAY_LEARNERS = table("day_learners", column("customer_id"))
"""``read_tags_of``'s temporary table of learners."""


def override_active(as_of: Day | None) -> Any:
    """SQL condition: the override applies on data day ``as_of`` (None: it is still open)."""
    if as_of is None:
        return Override.cleared_at.is_(None)
    return (
        (Override.effective_as_of <= as_of)
        & or_(Override.expires.is_(None), Override.expires > as_of)
        & or_(Override.cleared_as_of.is_(None), Override.cleared_as_of > as_of)
    )


def _tags_on(as_of: Day | None, customer_ids: Any = None) -> Any:
    """(customer_id, tag, since) of every learner on data day ``as_of``, as a subquery."""
    current = select(Status.customer_id, Status.tag, Status.since)
    if customer_ids is not None:
        current = current.where(Status.customer_id.in_(customer_ids))
    if as_of is None:
        return current.subquery("tags_on")
    earlier = Transition.__table__.alias("earlier")
    latest_id = (
        select(earlier.c.id)
        .where(earlier.c.customer_id == Status.customer_id, earlier.c.as_of <= as_of)
        .order_by(earlier.c.as_of.desc(), earlier.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    before = (
        select(Status.customer_id, Transition.to_tag, Transition.as_of)
        .join(Transition, Transition.id == latest_id)
        .where(Status.since > as_of)
    )
    if customer_ids is not None:
        before = before.where(Status.customer_id.in_(customer_ids))
    return union_all(current.where(Status.since <= as_of), before).subquery("tags_on")


def state_select(as_of: Day | None, customer_ids: Any = None) -> Select[Any]:
    """Each learner's tag on ``as_of`` with the override that applies then (None: current)."""
    tags = _tags_on(as_of, customer_ids)
    return (
        select(
            tags.c.customer_id,
            tags.c.tag,
            tags.c.since,
            Override.tag.label("override_tag"),
            Override.expires.label("override_expires"),
            Override.kind.label("override_kind"),
        )
        .outerjoin(Override, (Override.customer_id == tags.c.customer_id) & override_active(as_of))
        .order_by(tags.c.customer_id)
    )


STATE_ROWS = state_select(bindparam("as_of", type_=Date), bindparam("customer_ids", expanding=True))
"""``state_rows``' query, built once: SQLAlchemy then reuses its compiled form (~1 ms a call)."""


def read_tags(conn: Connection, as_of: date, customer_ids: Any = None) -> pd.DataFrame:
    """customer_id and db_tag of every learner (or of ``customer_ids``: a list, or a select of
    one column) on ``as_of``."""
    tags = _tags_on(as_of, customer_ids)
    frame = driver_frame(conn, select(tags.c.customer_id, tags.c.tag.label("db_tag")))
    return frame if len(frame.columns) else pd.DataFrame(columns=["customer_id", "db_tag"])


def read_tags_of(conn: Connection, as_of: date, customer_ids: pd.Series) -> pd.DataFrame:
    """``read_tags`` of the learners ``customer_ids`` only, however many.

    The batch checks only its changed decisions against the stored tags: a few thousand
    learners of a 200k day, whose whole state cost a third of a second of the commit (and five
    times that at 1M); none when the store has no status row yet. The ids go through a
    temporary table, not an ``IN`` list: SQLite takes at most 32,766 parameters a statement,
    and a day at 1M moves about 100k learners.
    """
    ids = sorted(set(customer_ids.tolist()))
    # A store without status rows has no tags to read: the first load, where every learner
    # is new and changed (at 1M the ids' table and the join cost ~2 s for no row).
    if not ids or holds_fewer_rows(conn, Status.__table__, 1):
        return pd.DataFrame(columns=["customer_id", "db_tag"])
    rows = [(customer_id,) for customer_id in ids]
    with temporary_table(conn, "day_learners", {"customer_id": "VARCHAR(64)"}, rows):
        return read_tags(conn, as_of, select(_DAY_LEARNERS.c.customer_id))


@dataclass(frozen=True)
class StateMark:
    """Where the state store stood before a read of the state (``state_mark``): the last
    transition's id and the completed runs, (as_of, run_id) by day."""

    last_transition_id: int | None
    runs: tuple[tuple[date, str], ...]


def state_mark(conn: Connection) -> StateMark:
    last_id = conn.execute(select(func.max(Transition.id))).scalar()
    return StateMark(last_id, _completed_runs(conn))


def _completed_runs(conn: Connection) -> tuple[tuple[date, str], ...]:
    stmt = select(BatchRun.as_of, BatchRun.run_id).where(BatchRun.status == "completed")
    return tuple((day, run_id) for day, run_id in conn.execute(stmt.order_by(BatchRun.as_of)))


def changed_since(mark: StateMark) -> Select[Any]:
    """The learners whose state on any day may differ from what it was at ``mark`` (an undo
    aside: ``undone_since``), as a select of their ids.

    A state changes by a transition (each gets a new, higher id: writers are serialised), by an
    override row (set, cleared or closed: every learner with one is taken), or by a run's undo.
    """
    moved = select(Transition.customer_id)
    if mark.last_transition_id is not None:
        moved = moved.where(Transition.id > mark.last_transition_id)
    return union(moved, select(Override.customer_id))


def undone_since(conn: Connection, as_of: date, mark: StateMark) -> bool:
    """Whether a run may have been undone since ``mark`` (a replace deletes transitions): a
    completed run other than ``mark``'s on a day other than ``as_of``, or ``as_of`` completed
    at ``mark`` already (the day itself replaced)."""
    runs = tuple(run for run in _completed_runs(conn) if run[0] != as_of)
    return runs != mark.runs or any(day == as_of for day, _ in mark.runs)


def sorts_as_python(conn: Connection) -> bool:
    """Whether ``ORDER BY customer_id`` is Python's (code point) order: SQLite's binary
    collation, or PostgreSQL's in a C locale (a language's locale sorts otherwise)."""
    if conn.dialect.name != "postgresql":
        return True
    collation = conn.exec_driver_sql(
        "SELECT coalesce(nullif(c.collname, 'default'), d.datcollate) FROM pg_attribute a "
        "JOIN pg_collation c ON c.oid = a.attcollation "
        "JOIN pg_database d ON d.datname = current_database() "
        "WHERE a.attrelid = 'status'::regclass AND a.attname = 'customer_id'"
    ).scalar()
    return collation in ("C", "POSIX", "ucs_basic") or str(collation).startswith("C.")


def active_hold_ids(conn: Connection, as_of: date) -> set[str]:
    """Learners whose ``hold`` override applies on ``as_of`` (campaigns hold nothing)."""
    stmt = select(Override.customer_id).where(override_active(as_of), Override.kind == HOLD_KIND)
    return set(conn.execute(stmt).scalars())


def open_override(conn: Connection, customer_id: str) -> dict[str, Any] | None:
    """The learner's open (not cleared) override, every column, or None."""
    stmt = select(*Override.__table__.columns).where(
        Override.customer_id == customer_id, Override.cleared_at.is_(None)
    )
    row = conn.execute(stmt).first()
    return None if row is None else dict(row._mapping)


def write_override(conn: Connection, row: dict[str, Any], from_tag: str, moves: bool) -> None:
    """Close the learner's open override, open ``row``, and log the move (if any) on its day.

    The previous override stops applying where this one starts (never before it began). The
    status row follows the move only when its day is not before the learner's current ``since``:
    status is the latest transition in data time.
    """
    customer_id, now, day = row["customer_id"], row["created_at"], row["effective_as_of"]
    end = case((Override.effective_as_of > day, Override.effective_as_of), else_=literal(day))
    conn.execute(
        update(Override)
        .where(Override.customer_id == customer_id, Override.cleared_at.is_(None))
        .values(cleared_at=now, cleared_as_of=end, clear_reason="replaced by a new override")
    )
    conn.execute(Override.__table__.insert().values(**row))
    if not moves:
        return
    conn.execute(
        Transition.__table__.insert().values(
            customer_id=customer_id,
            as_of=day,
            from_tag=from_tag,
            to_tag=row["tag"],
            actor=row["actor"],
            reason=row["reason"],
            signal=MANUAL_SIGNAL,
            created_at=now,
        )
    )
    conn.execute(
        update(Status)
        .where(Status.customer_id == customer_id, Status.since <= day)
        .values(tag=row["tag"], since=day, updated_at=now, run_id=None)
    )


def clear_override(
    conn: Connection, override_id: int, values: dict[str, Any], now: datetime
) -> None:
    """End one override early (``values`` from ``plan_clear``), recorded with who and why."""
    conn.execute(
        update(Override).where(Override.id == override_id).values(cleared_at=now, **values)
    )


def close_overrides_of_moved(conn: Connection, run_id: str, as_of: date, now: datetime) -> None:
    """End the overrides that applied to learners the run moved, on the run's day.

    A hold lets only a move to a terminal tag through, a campaign its exit rules: either way
    the override has done its work, and one left open beside the new tag would contradict it.
    Overrides dated after the run's day stay open: they apply later.
    """
    moved = select(Transition.customer_id).where(Transition.run_id == run_id)
    conn.execute(
        update(Override)
        .where(
            Override.cleared_at.is_(None),
            Override.effective_as_of <= as_of,
            Override.customer_id.in_(moved),
        )
        .values(
            cleared_at=now,
            cleared_as_of=as_of,
            clear_reason=f"ended by the learner's automatic move on {as_of} (run {run_id})",
        )
    )


def overrides_select(customer_id: str | None, live_from: date | None) -> Select[Any]:
    """Overrides, newest first: of one learner, and/or those still applying from ``live_from``."""
    stmt = select(*Override.__table__.columns).order_by(Override.id.desc())
    if customer_id is not None:
        stmt = stmt.where(Override.customer_id == customer_id)
    if live_from is not None:
        stmt = stmt.where(
            or_(Override.expires.is_(None), Override.expires > live_from),
            or_(Override.cleared_as_of.is_(None), Override.cleared_as_of > live_from),
        )
    return stmt


__all__ = [
    "STATE_ROWS",
    "StateMark",
    "active_hold_ids",
    "changed_since",
    "clear_override",
    "close_overrides_of_moved",
    "open_override",
    "override_active",
    "overrides_select",
    "read_tags",
    "read_tags_of",
    "sorts_as_python",
    "state_mark",
    "state_select",
    "undone_since",
    "write_override",
]
