"""SQL of the campaign outbox and its feedback (``serving.infra.store``).

Every function takes an open connection: the store decides the transaction. Planned messages
go in insert-if-absent (``ON CONFLICT DO NOTHING`` on the stable ``message_id``), so a rerun of
a day adds nothing twice. Dispatchers claim due rows with a lease (``claimed_by``,
``claimed_at``): on PostgreSQL under ``FOR UPDATE SKIP LOCKED``, on SQLite inside the store's
``BEGIN IMMEDIATE`` writer transaction; either way two dispatchers never hold the same row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import (
    Connection,
    Date,
    Select,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from serving.core.messages import (
    CANCELLED,
    FAILED,
    PAIR_COLUMNS,
    PENDING,
    SHARED_CONTEXT,
    SUPPRESSED,
)
from serving.core.outbox import own_contexts
from serving.infra.arrow_reads import read_table
from serving.infra.driver_rows import checks_once, driver_chunks, sqlite_insert
from serving.infra.outbox_contexts import with_own_contexts
from serving.infra.pair_tables import pairs_table, temporary_pairs
from serving.infra.sql import (
    copy_rows,
    holds_fewer_rows,
    indexes_after,
)
from serving.infra.tables import CampaignFeedback, Outbox

_CHUNK_ROWS = 5_000
SENDABLE = (PENDING, FAILED)
"""States a dispatcher may (re)send."""


def _dialect_insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def insert_messages(conn: Connection, rows: pd.DataFrame) -> int:
    """Insert outbox rows whose ``message_id`` is not there yet; return how many went in.

    Rows go in the way ``bulk_insert`` puts scores in: COPY on PostgreSQL (``_copy_messages``),
    the driver's executemany on SQLite (the CHECKs once per distinct value, ``sql.checks_once``);
    into an outbox holding fewer rows than come (the first
    load) the secondary indexes are built after the rows (``sql.indexes_after``) and the rows go
    in ``message_id`` order (the primary key's index, the one written row by row, then grows at
    its end). Into an outbox with its indexes they go in ``customer_id`` order: the two indexes
    led by customer_id are then written in their order; 76k rows into a 3.1M-row outbox at 1M
    learners, the statements alone, 3.1 -> 1.9 CPU s (PostgreSQL's COPY and ``INSERT ...
    SELECT``: 10.7 -> 5.3 s wall). The primary key's index takes the day's ids at its end (they
    lead with the day, ``message_key``; a bare hash put them at random places of it).
    One (customer_id, campaign_id, planned_on, state, sent_at) index instead of the two
    customer_id-led ones (migration 0006: one sort less on a first load; ``sent_times`` checks
    sent_at in it, SQLite and PostgreSQL reading the index alone). The count is
    the statements' own: the one ``INSERT ... SELECT`` on PostgreSQL, the sum over executemany
    on SQLite (sqlite3 adds up its statements' changes, and a row skipped by ``DO NOTHING``
    changes nothing). Counting the run's rows afterwards instead scanned the whole outbox
    (``run_id`` has no index), millions of rows at scale.
    """
    if rows.empty:
        return 0
    table = Outbox.__table__
    with indexes_after(conn, table, len(rows)) as rebuilt:
        order = "message_id" if rebuilt else "customer_id"
        if conn.dialect.name == "postgresql":
            chunks = driver_chunks(conn, table, rows, order_by=order)
            flat = (row for chunk in chunks for row in chunk)
            return _copy_messages(conn, list(rows.columns), flat, len(rows))
        insert_sql, bound = sqlite_insert(conn, table, rows, keep=["message_id"])
        chunks = driver_chunks(conn, table, rows, order_by=order, columns=bound)
        insert_sql += " ON CONFLICT (message_id) DO NOTHING"
        with checks_once(conn, table, rows):
            return sum(conn.exec_driver_sql(insert_sql, chunk).rowcount for chunk in chunks)


def _copy_messages(
    conn: Connection, columns: list[str], rows: Iterator[tuple[Any, ...]], count: int
) -> int:
    """PostgreSQL: COPY the rows into a temporary table, then one ``INSERT ... SELECT ... ON
    CONFLICT DO NOTHING``; straight into an empty outbox (nothing there to conflict with: the
    day's ids are unique, ``outbox_rows`` checks it), which spares writing every row twice."""
    if holds_fewer_rows(conn, Outbox.__table__, 1):
        copy_rows(conn, "outbox", columns, rows)
        return count
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE planned_outbox (LIKE outbox INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    copy_rows(conn, "planned_outbox", columns, rows)
    names = ", ".join(columns)
    inserted = conn.exec_driver_sql(
        f"INSERT INTO outbox ({names}) SELECT {names} FROM planned_outbox "
        "ON CONFLICT (message_id) DO NOTHING"
    ).rowcount
    conn.exec_driver_sql("DROP TABLE planned_outbox")
    return inserted


def drop_unsent_of_day(conn: Connection, as_of: date) -> None:
    """Before a replaced day's new plan: drop its messages nobody has tried to send yet.

    A message it keeps whose context is its group's (``SHARED_CONTEXT``) gets its own first:
    the message holding it may be one of those dropped.
    """
    unsent = and_(
        Outbox.planned_on == as_of,
        Outbox.state.in_((PENDING, SUPPRESSED)),
        Outbox.tries == 0,
        Outbox.claimed_by.is_(None),
    )
    holder = aliased(Outbox)
    own = (
        select(holder.context)
        .where(
            holder.customer_id == Outbox.customer_id,
            holder.campaign_id == Outbox.campaign_id,
            holder.planned_on == Outbox.planned_on,
            holder.context != SHARED_CONTEXT,
        )
        .limit(1)
        .scalar_subquery()
    )
    kept_shared = and_(Outbox.planned_on == as_of, Outbox.context == SHARED_CONTEXT, ~unsent)
    conn.execute(update(Outbox).where(kept_shared).values(context=own))
    conn.execute(delete(Outbox).where(unsent))


def without_kept_steps(conn: Connection, as_of: date, rows: pd.DataFrame) -> pd.DataFrame:
    """A replaced day's new ``rows`` less the messages of that day the outbox still holds
    (``drop_unsent_of_day`` keeps those sent or being sent), matched by learner, campaign and
    step whatever their id: a day planned by an earlier version has ids of another form
    (``message_key``) that the insert's conflict on ``message_id`` would miss: sent twice."""
    key = (Outbox.customer_id, Outbox.campaign_id, Outbox.step)
    kept = [tuple(row) for row in conn.execute(select(*key).where(Outbox.planned_on == as_of))]
    if not kept:
        return rows
    steps = pd.MultiIndex.from_frame(rows[["customer_id", "campaign_id", "step"]].astype(object))
    # a message left out may hold the context its group's others share
    return own_contexts(rows.loc[~steps.isin(kept)], rows)


def cancel_pairs(conn: Connection, pairs: pd.DataFrame, as_of: date, now: datetime) -> int:
    """Cancel the still-sendable messages planned before ``as_of`` of the (customer_id,
    campaign_id) ``pairs``; sent ones stay as they are. Returns how many were cancelled.

    One statement over a temporary table of the pairs. The pairs drive the join (``CROSS JOIN``
    keeps them the outer loop on SQLite, whose planner otherwise walks the ``(state, due_on)``
    index, i.e. every pending message of every day, once per pair): each pair then finds its
    learner's messages through the pair index, by ``rowid`` on SQLite (no probe of the growing
    primary-key index a row, as by ``message_id``: 150k pairs of a 1M store 5.2-5.6 -> 4.6-4.8
    s). The day's own messages are never cancelled: a learner may change campaigns in a day.
    """
    if pairs.empty:
        return 0
    sendable = ", ".join(f"'{state}'" for state in SENDABLE)  # constants, not input
    row = "rowid" if conn.dialect.name == "sqlite" else "message_id"
    statement = text(
        f"UPDATE outbox SET state = '{CANCELLED}', last_error = NULL, next_attempt_at = NULL "
        f"WHERE {row} IN (SELECT o.{row} FROM cancelled_pairs c CROSS JOIN outbox o "
        "WHERE o.customer_id = c.customer_id AND o.campaign_id = c.campaign_id "
        f"AND o.state IN ({sendable}) AND o.planned_on < :as_of)"
    ).bindparams(bindparam("as_of", type_=Date))
    rows = pairs[["customer_id", "campaign_id"]].astype(str)
    with pairs_table(conn, "cancelled_pairs", rows):
        result = conn.execute(statement, {"as_of": as_of})
    return max(result.rowcount, 0)


def outbox_select(
    *,
    states: tuple[str, ...] | None = None,
    customer_ids: list[str] | None = None,
    since: date | None = None,
    until: date | None = None,
    columns: tuple[str, ...] | None = None,
) -> Select[Any]:
    """Outbox rows, by planned day then id: of some states, learners, planned days; all
    columns, or only ``columns``."""
    table = Outbox.__table__.columns
    picked = table if columns is None else [table[name] for name in columns]
    stmt = select(*picked).order_by(Outbox.planned_on, Outbox.message_id)
    if states is not None:
        stmt = stmt.where(Outbox.state.in_(states))
    if customer_ids is not None:
        stmt = stmt.where(Outbox.customer_id.in_(customer_ids))
    if since is not None:
        stmt = stmt.where(Outbox.planned_on >= since)
    if until is not None:
        stmt = stmt.where(Outbox.planned_on <= until)
    return stmt


PAIR_COUNTS = pa.schema(
    [("customer_id", pa.string()), ("campaign_id", pa.string()), ("messages", pa.int64())]
)
"""The planner's per-pair counts (``pending_pairs_select``, ``window_counts``) as Arrow."""


def pending_pairs_select(as_of: date) -> Select[Any]:
    """The (customer_id, campaign_id) pairs with still-sendable messages planned before
    ``as_of``, one row each, with how many (``messages``).

    SQLite groups them in a temporary B-tree, about half the query on a 200k steady day (0.23
    against 0.12 CPU s ungrouped). Fetched ungrouped and counted in Python instead (ids coded
    by Arrow, pair codes counted by ``np.unique``) it saved nothing in the batch's process:
    the 226k rows' Python objects (the day's frames in memory for the collector to walk) cost
    what the sort did, and the pairs out of key order slowed ``candidate_pairs`` (0.15 -> 0.18
    s); ``pending_pairs`` 0.35 either way."""
    return (
        select(Outbox.customer_id, Outbox.campaign_id, func.count().label("messages"))
        .where(Outbox.state.in_(SENDABLE), Outbox.planned_on < as_of)
        .group_by(Outbox.customer_id, Outbox.campaign_id)
    )


def window_starts(as_of: date, windows: Mapping[str, int]) -> dict[str, date]:
    """Each campaign's cap window's first day: ``windows`` days up to ``as_of``, the day itself
    counted (planned on or after ``as_of - days + 1``)."""
    return {campaign: as_of - timedelta(days=days - 1) for campaign, days in windows.items()}


def in_window_select(as_of: date, windows: Mapping[str, int]) -> Select[Any]:
    """Per learner and campaign, the messages planned in that campaign's window before ``as_of``.

    A campaign's window is its ``windows`` days up to ``as_of`` (planned on or after
    ``as_of - days + 1``), the day itself left out (a replaced day is planned against the outbox
    as it stood before it); cancelled messages do not count; campaigns not in ``windows`` never
    match. One row per (customer_id, campaign_id) with ``messages``.
    """
    starts = window_starts(as_of, windows)
    counted = select(Outbox.customer_id, Outbox.campaign_id, func.count().label("messages"))
    counted = counted.group_by(Outbox.customer_id, Outbox.campaign_id)
    if not starts:
        return counted.where(false())
    return counted.where(
        Outbox.planned_on >= min(starts.values()),  # the index's range; the case is per row
        Outbox.planned_on < as_of,
        Outbox.planned_on >= case(starts, value=Outbox.campaign_id, else_=as_of),
        Outbox.state != CANCELLED,
    )


def window_counts(
    conn: Connection, as_of: date, windows: Mapping[str, int], pairs: pd.DataFrame
) -> pa.Table:
    """``in_window_select``'s counts of the (customer_id, campaign_id) ``pairs`` only, as a
    ``PAIR_COUNTS`` table (the store makes the frame).

    The planner needs the counts of the pairs the day's decisions name only: about one per
    learner, against every pair with a message in any window. The pairs go to a temporary
    table with their campaign's window start (``since``) and drive the join (``CROSS JOIN``
    keeps them the outer loop on SQLite) through the outbox's (customer_id, campaign_id,
    planned_on, state) index: a seek and the few entries in the window per pair, no table row,
    so the cost follows the learners, not the outbox's history. On PostgreSQL the planner's
    choice (a hash join over the outbox) costs about what the whole count did. Pairs of
    campaigns without a window are not counted.

    Measured against this on a 200k steady day (97k pairs, 87k of them with a message in a
    window, so few pairs could be left out; CPU s, 0.37 for all of this): the in-window rows
    grouped in SQL (``in_window_select``: 365k groups, fetched only) 0.97; the window start as
    a ``CASE`` on the campaign instead of a column 0.42; the pairs as one ``json_each`` text
    instead of a table 0.48; grouping by the pair's position 0.36 (noise);
    ``temp_store=MEMORY`` no change. One read with ``pending_pairs_select`` would scan every
    learner's history, not only the pairs'.

    On a SQLite file the pairs' table and the join are the reader process's (``arrow_reads``):
    at 1M learners (483k pairs) 1.0 s against 2.1-2.4 s through the driver's rows.
    """
    starts = window_starts(as_of, windows)
    rows = pairs[list(PAIR_COLUMNS)].astype(str)
    rows = rows.assign(since=rows["campaign_id"].map(starts)).dropna(subset=["since"])
    first = min((starts[campaign] for campaign in rows["campaign_id"].unique()), default=as_of)
    if rows.empty or not _planned_between(conn, first, as_of):
        return PAIR_COUNTS.empty_table()
    statement = text(
        "SELECT p.customer_id, p.campaign_id, count(*) AS messages "
        "FROM window_pairs p CROSS JOIN outbox o "
        "WHERE o.customer_id = p.customer_id AND o.campaign_id = p.campaign_id "
        f"AND o.planned_on >= p.since AND o.planned_on < :as_of AND o.state != '{CANCELLED}' "
        "GROUP BY p.customer_id, p.campaign_id"
    ).bindparams(bindparam("as_of", as_of, type_=Date))
    return read_table(conn, statement, PAIR_COUNTS, (temporary_pairs("window_pairs", rows),))


def _planned_between(conn: Connection, first: date, before: date) -> bool:
    """Whether any message was planned on a day in [first, before): one seek of the
    ``planned_on`` index. Without one every count is 0 and the pairs' temporary table (a pair
    per learner: most of a first load's plan) is not worth making."""
    probe = select(Outbox.message_id).where(Outbox.planned_on >= first, Outbox.planned_on < before)
    return conn.execute(probe.limit(1)).first() is not None


def feedback_select(message_ids: list[str] | None = None) -> Select[Any]:
    """Feedback events, oldest first."""
    stmt = select(*CampaignFeedback.__table__.columns).order_by(CampaignFeedback.id)
    if message_ids is not None:
        stmt = stmt.where(CampaignFeedback.message_id.in_(message_ids))
    return stmt


def counts_select(until: date | None) -> Select[Any]:
    """Messages by state and channel (planned on or before ``until`` when given)."""
    stmt = select(Outbox.state, Outbox.channel, func.count().label("messages"))
    if until is not None:
        stmt = stmt.where(Outbox.planned_on <= until)
    return stmt.group_by(Outbox.state, Outbox.channel).order_by(Outbox.state, Outbox.channel)


def _due(data_day: date, now: datetime, channels: tuple[str, ...] | None, lease: timedelta) -> Any:
    """SQL condition: the row may be sent now (due, not waiting, not held by a live claim)."""
    condition = and_(
        Outbox.state.in_(SENDABLE),
        Outbox.due_on <= data_day,
        or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now),
        or_(Outbox.claimed_at.is_(None), Outbox.claimed_at < now - lease),
    )
    if channels is not None:
        condition = and_(condition, Outbox.channel.in_(channels))
    return condition


def due_select(
    data_day: date, now: datetime, channels: tuple[str, ...] | None, lease: timedelta
) -> Select[Any]:
    """Due rows, oldest due first (what a dry run renders; what a claim takes)."""
    return (
        select(*Outbox.__table__.columns)
        .where(_due(data_day, now, channels, lease))
        .order_by(Outbox.due_on, Outbox.message_id)
    )


def claim_due(
    conn: Connection,
    token: str,
    *,
    data_day: date,
    now: datetime,
    channels: tuple[str, ...] | None,
    lease: timedelta,
    limit: int,
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due rows for dispatcher ``token`` and return them.

    On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED``, so a second dispatcher
    claiming at the same moment takes other rows instead of waiting; on SQLite the caller's
    ``BEGIN IMMEDIATE`` transaction serialises claims.
    """
    chosen = due_select(data_day, now, channels, lease).limit(limit)
    if conn.dialect.name == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    rows = with_own_contexts(conn, [dict(row._mapping) for row in conn.execute(chosen)])
    ids = [row["message_id"] for row in rows]
    if ids:
        conn.execute(
            update(Outbox)
            .where(Outbox.message_id.in_(ids))
            .values(claimed_by=token, claimed_at=now)
        )
    return rows


def mark_attempts(conn: Connection, token: str, attempts: list[dict[str, Any]]) -> None:
    """Record attempts of messages ``token`` holds, one statement for them all; claims end.

    Each attempt: ``message_id``, ``state`` (sent, failed or dead), ``sent_at``, ``subject``,
    ``body`` (a sent one's), ``last_error`` and ``next_attempt_at`` (a failed one's).
    """
    if not attempts:
        return
    statement = (
        update(Outbox)
        .where(Outbox.message_id == bindparam("attempt_id"), Outbox.claimed_by == token)
        .values(
            state=bindparam("state"), tries=Outbox.tries + 1, sent_at=bindparam("sent_at"),
            subject=bindparam("subject"), body=bindparam("body"),
            last_error=bindparam("last_error"), next_attempt_at=bindparam("next_attempt_at"),
            claimed_by=None, claimed_at=None,
        )
    )  # fmt: skip
    rows = [
        {
            "attempt_id": attempt["message_id"], "state": attempt["state"],
            "sent_at": attempt.get("sent_at"), "subject": attempt.get("subject"),
            "body": attempt.get("body"), "last_error": (attempt.get("last_error") or "")[:2000]
            or None, "next_attempt_at": attempt.get("next_attempt_at"),
        }
        for attempt in attempts
    ]  # fmt: skip
    conn.execute(statement, rows)


def release(conn: Connection, message_id: str, token: str, not_before: datetime | None) -> None:
    """Give a claimed row back unsent (deferred, or left when the dispatcher stops early)."""
    conn.execute(
        update(Outbox)
        .where(Outbox.message_id == message_id, Outbox.claimed_by == token)
        .values(next_attempt_at=not_before, claimed_by=None, claimed_at=None)
    )


def sent_times(conn: Connection, customer_ids: list[str], since: datetime) -> dict[str, list]:
    """When each of ``customer_ids`` was sent a message at or after ``since``: from the
    learner's entries of the (customer_id, ..., sent_at) index, no table row."""
    found: dict[str, list] = {customer_id: [] for customer_id in customer_ids}
    for start in range(0, len(customer_ids), _CHUNK_ROWS):
        rows = conn.execute(
            select(Outbox.customer_id, Outbox.sent_at).where(
                Outbox.customer_id.in_(customer_ids[start : start + _CHUNK_ROWS]),
                Outbox.sent_at >= since,
            )
        )
        for customer_id, sent_at in rows:
            found[customer_id].append(sent_at)
    return found


def message_exists(conn: Connection, message_id: str) -> bool:
    """Whether the outbox holds ``message_id``."""
    stmt = select(Outbox.message_id).where(Outbox.message_id == message_id)
    return conn.execute(stmt).first() is not None


def insert_feedback(
    conn: Connection, message_id: str, kind: str, source: str, now: datetime
) -> bool:
    """Record one feedback event; False when the message already had this kind (no change)."""
    statement = (
        _dialect_insert(conn)(CampaignFeedback)
        .values(message_id=message_id, kind=kind, source=source, recorded_at=now)
        .on_conflict_do_nothing(index_elements=["message_id", "kind"])
        .returning(CampaignFeedback.id)
    )
    return conn.execute(statement).first() is not None


__all__ = [
    "PAIR_COUNTS",
    "SENDABLE",
    "cancel_pairs",
    "claim_due",
    "counts_select",
    "drop_unsent_of_day",
    "due_select",
    "feedback_select",
    "in_window_select",
    "insert_feedback",
    "insert_messages",
    "mark_attempts",
    "message_exists",
    "outbox_select",
    "pending_pairs_select",
    "release",
    "sent_times",
    "window_counts",
    "without_kept_steps",
]
