"""The state store's campaign messages: the outbox a batch day writes and dispatchers drain.

``OutboxMixin`` gives ``StateStore`` its outbox methods:

- ``apply_day(batch, decisions, scores, plan)``: ``apply_batch`` with the day's campaign plan.
  The planned messages go to the ``outbox`` (``pending``, or ``suppressed`` for the control
  group) and the messages of the plan's ``cancels`` pairs are cancelled inside the batch
  transaction: a day that rolls back leaves no message; a rerun inserts nothing twice (stable
  ``message_id``, insert if absent); a replace first drops the replaced day's messages nobody
  tried to send yet.
- what the campaign planner reads (``pending_pairs``, ``messages_in_window``), what the
  dispatcher claims and records (``claim_messages``, ``record_attempts``,
  ``release_message``), what the measurement reads (``outbox_frame``, ``feedback_frame``,
  ``outbox_counts``) and what ``POST /events/campaign`` records (``record_feedback``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Engine, update

from serving.core.frames import RunRecord
from serving.core.messages import FAILED, PENDING, SENT, CampaignPlan, no_pairs
from serving.core.outbox import outbox_rows
from serving.core.planning import BatchDay, checked_decisions, require_aware, score_rows
from serving.core.problems import NotFound
from serving.infra.arrow_reads import read_table
from serving.infra.outbox_contexts import frame_with_own_contexts
from serving.infra.outbox_sql import (
    PAIR_COUNTS,
    cancel_pairs,
    claim_due,
    counts_select,
    drop_unsent_of_day,
    due_select,
    feedback_select,
    in_window_select,
    insert_feedback,
    insert_messages,
    mark_attempts,
    message_exists,
    outbox_select,
    pending_pairs_select,
    release,
    sent_times,
    window_counts,
    without_kept_steps,
)
from serving.infra.sql import latest_completed, result_frame
from serving.infra.tables import BatchRun, Outbox, column_names

SENDABLE_STATES = (PENDING, FAILED)
"""States a message is still to be sent in."""


MEASURED_OUTBOX = pa.schema(
    [
        ("message_id", pa.string()),
        ("planned_on", pa.date32()),
        ("due_on", pa.date32()),
        ("customer_id", pa.string()),
        ("campaign_id", pa.string()),
        ("step", pa.int64()),
        ("channel", pa.string()),
        ("template_id", pa.string()),
        ("variant", pa.string()),
        ("control", pa.bool_()),
        ("state", pa.string()),
    ]
)
"""The outbox columns the campaign measurement reads (``measured_outbox``), as Arrow."""


def planned_rows(
    as_of: date, plan: CampaignPlan | None, run_id: str, now: datetime
) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """A plan's outbox rows (checked before anything is written) and its pairs to cancel."""
    if plan is None:
        return None, no_pairs()
    return outbox_rows(as_of, plan.handover, run_id, now), plan.cancels


class OutboxMixin:
    """Outbox methods of ``StateStore`` (which provides the engine and the transactions)."""

    _engine: Engine

    def _connect(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # StateStore's

    def _writer(self, *, synced: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # StateStore's

    def _checkpoint_later(self) -> None:
        raise NotImplementedError  # StateStore's

    def _claim_run(self, batch: BatchDay) -> RunRecord | None:
        raise NotImplementedError  # StateStore's

    def _write_batch(
        self, conn: Connection, batch: BatchDay, decisions: pd.DataFrame, scores: pd.DataFrame
    ) -> tuple[RunRecord, str | None]:
        raise NotImplementedError  # StateStore's

    def _write_scores(self, batch: BatchDay, rows: pd.DataFrame) -> None:
        raise NotImplementedError  # StateStore's

    def _retire_scores(self, as_of: date, run_ids: Iterable[str | None]) -> None:
        raise NotImplementedError  # StateStore's

    def _discard_scores(self, as_of: date, run_id: str) -> None:
        raise NotImplementedError  # StateStore's

    def _mark_failed(self, as_of: date, error: Exception) -> None:
        raise NotImplementedError  # StateStore's

    def apply_day(
        self,
        batch: BatchDay,
        decisions: pd.DataFrame,
        scores: pd.DataFrame | None,
        plan: CampaignPlan | None = None,
    ) -> RunRecord:
        """``apply_batch`` of a ``BatchDay``, with the day's campaign ``plan`` (messages and pairs
        to cancel) written in the same transaction (``serving.infra.outbox_store``).

        Raises:
            ValueError: as ``apply_batch``, and a plan whose messages break their contract.
        """
        as_of, run_id, now = batch.as_of, batch.run_id, batch.now
        require_aware(now, "now")
        if not run_id.strip():
            raise ValueError("run_id is empty")
        checked = checked_decisions(as_of, decisions)
        rows = score_rows(as_of, checked, scores, run_id, batch.model_version)
        messages, cancels = planned_rows(as_of, plan, run_id, now)
        existing = self._claim_run(batch)
        if existing is not None:
            return existing
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:  # its exit waits for the file
                # The run's file (seen once the run is completed) is written while the SQL
                # transaction does its work: pyarrow and sqlite3 both release the GIL.
                file_written = pool.submit(self._write_scores, batch, rows)
                # The day's WAL (~90 MB at 200k learners) is synced by the commit and copied
                # into the file after it, off the day's path (``sql.wal_synced_commit``).
                with self._writer(synced=True) as conn:
                    record, replaced = self._write_batch(conn, batch, checked, rows)
                    record = self._write_messages(conn, batch, messages, cancels, record)
                    file_written.result()  # before the commit: no day commits without its file
        except Exception as error:
            self._discard_scores(as_of, run_id)
            self._mark_failed(as_of, error)
            raise
        self._checkpoint_later()
        lost = run_id if record.run_id != run_id else None  # another process did the day
        self._retire_scores(as_of, [replaced, lost])
        return record

    # ---- campaign messages ---------------------------------------------------------------

    def latest_batch_day(self) -> date | None:
        """The latest completed batch day, if any: the data clock (messages fall due on it; the
        CLI describes it when no day is given)."""
        with self._connect() as conn:
            return latest_completed(conn)

    def pending_pairs(self, as_of: date) -> pd.DataFrame:
        """The planner's ``pending``: the (customer_id, campaign_id) pairs with messages still
        to send (``pending`` or ``failed``) planned before ``as_of``, with how many
        (``messages``); one row per pair, whatever the number of steps."""
        with self._connect() as conn:
            return _pair_counts(read_table(conn, pending_pairs_select(as_of), PAIR_COUNTS))

    def messages_in_window(
        self, as_of: date, windows: Mapping[str, int], pairs: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """The planner's ``in_window``: per learner and campaign, the ``messages`` planned in
        the campaign's ``windows`` days before ``as_of``, cancelled ones aside
        (``outbox_sql.in_window_select``); customer_id, campaign_id, messages.

        With ``pairs`` (customer_id, campaign_id), only theirs (``outbox_sql.window_counts``):
        the pairs a day's decisions name instead of every pair with a message in a window.
        """
        with self._connect() as conn:
            if pairs is None:
                counts = read_table(conn, in_window_select(as_of, windows), PAIR_COUNTS)
            else:
                counts = window_counts(conn, as_of, windows, pairs)
        return _pair_counts(counts)

    def outbox_frame(
        self,
        *,
        states: Sequence[str] | None = None,
        customer_ids: Sequence[str] | None = None,
        since: date | None = None,
        until: date | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Outbox rows by planned day: of some states, learners, or planned days (inclusive);
        every column, or only ``columns``.

        Dates (``planned_on``, ``due_on``) are ``datetime64[us]``; instants are aware UTC.
        """
        wanted = None if columns is None else list(columns)
        if wanted is not None and "context" in wanted:  # a shared context is found by its group
            wanted = list(dict.fromkeys([*wanted, "customer_id", "campaign_id", "planned_on"]))
        stmt = outbox_select(
            states=None if states is None else tuple(states),
            customer_ids=None if customer_ids is None else list(customer_ids),
            since=since,
            until=until,
            columns=None if wanted is None else tuple(wanted),
        )
        with self._connect() as conn:
            frame = frame_with_own_contexts(conn, result_frame(conn.execute(stmt)))
        if columns is not None and len(frame.columns):
            frame = frame[list(columns)]
        return _outbox_frame(frame, column_names(Outbox) if columns is None else list(columns))

    def measured_outbox(self, until: date | None = None) -> pd.DataFrame:
        """What the campaign measurement reads of the outbox (``campaign_effect``'s
        ``OUTBOX_COLUMNS``): the messages planned on or before ``until`` (all when None), as
        ``outbox_frame`` gives them, with an empty ``context`` (the templates' fields: the
        outbox's bulk, which no measure reads).

        Read as Arrow (``arrow_reads.read_table``) rather than as the driver's rows: at 1M
        learners (3.1M messages) ``outbox_frame()`` took ~60 s inside ``lstep report``.
        """
        with self._connect() as conn:
            stmt = outbox_select(until=until, columns=tuple(MEASURED_OUTBOX.names))
            table = read_table(conn, stmt, MEASURED_OUTBOX)
        # text comes out as pandas' str dtype (Arrow-backed, NaN for null), as outbox_frame's
        return _outbox_frame(table.to_pandas(), MEASURED_OUTBOX.names).assign(context="")

    def feedback_frame(self, message_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Feedback events (message_id, kind, recorded_at, source), oldest first."""
        stmt = feedback_select(None if message_ids is None else list(message_ids))
        with self._connect() as conn:
            frame = result_frame(conn.execute(stmt))
        if frame.columns.empty:
            frame = pd.DataFrame(columns=["id", "message_id", "kind", "recorded_at", "source"])
        return frame.drop(columns="id")

    def outbox_counts(self, until: date | None = None) -> pd.DataFrame:
        """Messages by (state, channel), planned on or before ``until`` when given."""
        with self._connect() as conn:
            frame = result_frame(conn.execute(counts_select(until)))
        empty = pd.DataFrame(columns=["state", "channel", "messages"])
        return frame if len(frame.columns) else empty

    def due_messages(
        self, *, data_day: date, now: datetime, channels: Sequence[str] | None, lease: timedelta
    ) -> pd.DataFrame:
        """Messages a dispatcher could claim now (what ``--dry-run`` renders), nothing claimed."""
        stmt = due_select(data_day, now, None if channels is None else tuple(channels), lease)
        with self._connect() as conn:
            frame = frame_with_own_contexts(conn, result_frame(conn.execute(stmt)))
        return _outbox_frame(frame, column_names(Outbox))

    def claim_messages(
        self,
        token: str,
        *,
        data_day: date,
        now: datetime,
        channels: Sequence[str] | None,
        lease: timedelta,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Claim up to ``limit`` due messages for dispatcher ``token`` (see ``claim_due``)."""
        require_aware(now, "now")
        picked = None if channels is None else tuple(channels)
        with self._dispatch_transaction() as conn:
            return claim_due(
                conn, token, data_day=data_day, now=now, channels=picked, lease=lease, limit=limit
            )

    def record_attempts(self, token: str, attempts: list[dict[str, Any]]) -> None:
        """Record what sending claimed messages did, in one transaction (``mark_attempts``):
        ``sent`` with subject, body and ``sent_at``; ``failed`` with the error and
        ``next_attempt_at``; ``dead``."""
        with self._dispatch_transaction() as conn:
            mark_attempts(conn, token, attempts)

    def record_sent(
        self, message_id: str, token: str, *, subject: str, body: str, now: datetime
    ) -> None:
        """Mark one claimed message ``sent`` with the subject and body that went out."""
        attempt = {"message_id": message_id, "state": SENT, "subject": subject, "body": body}
        self.record_attempts(token, [{**attempt, "sent_at": now}])

    def release_message(self, message_id: str, token: str, not_before: datetime | None) -> None:
        """Give a claimed message back unsent, to be tried from ``not_before``."""
        with self._dispatch_transaction() as conn:
            release(conn, message_id, token, not_before)

    def sent_since(self, customer_ids: Sequence[str], since: datetime) -> dict[str, list]:
        """customer_id -> instants they were sent a message at or after ``since``."""
        with self._connect() as conn:
            return sent_times(conn, list(customer_ids), since)

    def record_feedback(self, message_id: str, kind: str, *, source: str, now: datetime) -> bool:
        """Record that a message was delivered, opened, clicked or converted (once per kind).

        Returns:
            True when recorded, False when the message already had this kind (nothing changed).

        Raises:
            NotFound: no message ``message_id`` in the outbox.
        """
        require_aware(now, "now")
        with self._writer() as conn:
            if not message_exists(conn, message_id):
                raise NotFound(f"message_id {message_id!r}: no such message in the outbox")
            return insert_feedback(conn, message_id, kind, source, now)

    def _write_messages(
        self,
        conn: Connection,
        batch: BatchDay,
        messages: pd.DataFrame | None,
        cancels: pd.DataFrame,
        record: RunRecord,
    ) -> RunRecord:
        """The plan's part of the batch transaction; its counts join the run summary.

        Control rows go in ``suppressed``, the rest ``pending``; a message already there (a
        rerun) is left as it is; a replace first drops the replaced day's messages nobody tried
        to send yet; the still-sendable messages of the ``cancels`` pairs planned before the day
        become ``cancelled``.
        """
        if record.run_id != batch.run_id:  # another process completed the day meanwhile
            return record
        if batch.replace:
            drop_unsent_of_day(conn, batch.as_of)
        if messages is None and cancels.empty:
            return record
        inserted = 0
        if messages is not None:
            fresh = without_kept_steps(conn, batch.as_of, messages) if batch.replace else messages
            inserted = insert_messages(conn, fresh)
        cancelled = cancel_pairs(conn, cancels, batch.as_of, batch.now)
        summary = {
            **(record.summary or {}),
            "messages": {
                "planned": 0 if messages is None else len(messages),
                "inserted": inserted,
                "suppressed": 0 if messages is None else int(messages["control"].sum()),
                "cancelled": cancelled,
            },
        }
        conn.execute(
            update(BatchRun).where(BatchRun.run_id == record.run_id).values(summary=summary)
        )
        return record.model_copy(update={"summary": summary})

    @contextmanager
    def _dispatch_transaction(self) -> Iterator[Connection]:
        """A short transaction of a dispatcher: rows locked one by one on PostgreSQL (no
        store-wide lock, so dispatching never waits for a batch), the writer's on SQLite."""
        if self._engine.dialect.name != "postgresql":
            with self._writer() as conn:
                yield conn
            return
        with self._connect() as conn, conn.begin():
            yield conn


def _pair_counts(counts: pa.Table) -> pd.DataFrame:
    """customer_id, campaign_id (``str``) and ``messages`` (int64) of a ``PAIR_COUNTS``
    table, also when it has no row.

    The ids stay Arrow text (pandas' ``str``): at 1M learners the pending pairs and the window
    counts are about a million rows each, and Python strings of them cost more than the read.
    """
    return counts.to_pandas().astype({"customer_id": "str", "campaign_id": "str"})


def _outbox_frame(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Outbox rows as a frame: dates as ``datetime64[us]`` like every frame of the store."""
    if frame.columns.empty:
        frame = pd.DataFrame(columns=columns)
    for column in ("planned_on", "due_on"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    for column in ("next_attempt_at", "sent_at", "claimed_at", "created_at"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


__all__ = ["SENDABLE_STATES", "OutboxMixin", "planned_rows"]
