"""The inputs' proof carried from the day before: only the events since it are checked again.

``features.parquet_check`` proves a log clean by reading all of it: at 1M learners x 60 days
8.6-9.4 s of every ``lstep score`` on a log in learner order, 11.7-12.9 s in time order (4.8 s
of it sorting 59M row hashes on a machine whose numpy sort is not vectorised). An appended log
is yesterday's log plus a day. ``prove_kept`` keeps, with a clean proof, what the next day needs
to check only the new part:

- a bound, the midnight ``LATE_DAYS`` before the one of the log's last day: the events before it
  are the kept part (an event that arrives a day late is not a change to it);
- their count and the sum of their row hashes (``parquet_check.ROW_HASH``), taken by the whole
  proof from the hashes its duplicates step fetches;
- per learner, their count and first event (``<directory>/inputs.learners.parquet``), from the
  whole proof's per-learner step.

The next day, one scan of the log proves its events before the bound are the kept ones (the
same count and sum: a changed, added or removed event before it shows), and only the events
from the bound on are checked, as the whole log would be:

- their rows (timestamps against the new ``now``, durations, event types, channels);
- their duplicates among themselves: two equal rows have the same ``ts``, so a kept event and a
  new one can never be equal;
- every learner, kept and new, against today's customers file (unknown ids, events before the
  enrolment), and the customers file in full.

The record also keeps the proved file's stamp and, per day from its bound on, the count and
hash sum of its events; the next day's proof compares its own days with them and records until
which midnight its file holds the events of the day before's (``SameAs``). ``features.carry``
reads that instead of scanning the log's past again (2.4-2.6 s of the day's window at 1M).

At 1M x 60 that day takes 3.6-4.0 s in learner order and 3.6-4.3 s in time order (the scan of
the kept part 1.1-1.5 s and 2.0-2.5 s of it), and the whole proof that keeps its state 0.2 s
more than one that does not.

So a log passes the kept proof exactly when it passes the whole one, but for hash collisions:
the whole proof refuses two distinct rows of equal hashes anywhere, the kept one only among the
new rows. Anything else sends the day to the whole proof, which keeps its own state when clean:
no kept proof, one that cannot be read, made by other checks or of another file, a ``now``
before the kept one's, a changed past. The state is a cache: deleting it costs one whole proof.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from features.atomic import replace_whole
from features.parquet_check import (
    CHECKS_SQL,
    ROW_HASH,
    Proof,
    checkable_files,
    checks_proof,
    instant_us,
    read_checked,
    unreadable,
    values_proof,
)
from features.parquet_source import copy_whole, parquet_source
from features.schemas import EARLIEST_INSTANT
from features.validation_report import utc_instant
from features.window_sql import timestamp_literal
from features.workspace import TableInput, connect

logger = logging.getLogger(__name__)

RECORD_NAME, LEARNERS_NAME = "inputs.json", "inputs.learners.parquet"
"""The kept proof's files in its directory (the record is written last: it says all is there)."""

LATE_DAYS = 1
"""Days before the log's last one whose events are checked again the next day: an event that
arrives a day late (a phone offline overnight) is among the new events, not a change to the
kept part, which would cost a whole proof. The carried window reads these days (and the last
one) from the log every day for the same reason (``features.carry_sql.FRESH_DAYS``)."""

_RECENT = "CREATE OR REPLACE TEMP TABLE proof_recent AS SELECT * FROM {events} WHERE {recent}"
_WHOLE_LEARNERS = """
CREATE OR REPLACE TEMP TABLE proof_learners AS
SELECT customer_id, count(*) AS events, min(epoch_us(ts)) AS first_us,
       count(*) FILTER ({kept}) AS kept_events, min(epoch_us(ts)) FILTER ({kept}) AS kept_first_us
FROM {events} GROUP BY customer_id
"""
_WHOLE_KEPT = """
(SELECT customer_id, kept_events AS events, kept_first_us AS first_us
 FROM proof_learners WHERE kept_events > 0)
"""
_KEPT_PART = "SELECT count(*), coalesce(sum({hash}), 0) FROM {events} WHERE {before}"
_GROUPED = "SELECT customer_id, count(*) AS events, min(epoch_us(ts)) AS first_us FROM {events}"
_DAYS = """
SELECT CAST(make_timestamp(epoch_us(ts)) AS DATE) AS day, count(*), sum({hash})
FROM {events} WHERE {where} GROUP BY day
"""
_MERGED = """
(SELECT customer_id, sum(events) AS events, min(first_us) AS first_us FROM (
    SELECT customer_id, events, first_us FROM {kept}
    UNION ALL {grouped} WHERE {recent} GROUP BY customer_id
) GROUP BY customer_id)
"""


class SameAs(BaseModel):
    """A proved file's events before ``before`` are those of the file proved the day before."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events_size: int
    events_mtime_ns: int
    """The stamp of the file proved the day before."""
    before: datetime
    """A midnight (naive UTC): the events before it are the same in both files."""


class ProofRecord(BaseModel):
    """What a kept proof holds (``inputs.json`` beside ``inputs.learners.parquet``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    events_path: str
    events_size: int
    events_mtime_ns: int
    """The proved file's stamp, as it was when the proof began."""
    now: datetime
    """The instant the log was proved at (a later day's ``now`` may not be earlier)."""
    before: datetime
    """The kept part's bound: the events before this midnight (naive UTC)."""
    rows: int
    fingerprint: int
    """The sum of the kept events' ``ROW_HASH`` modulo 2**64 (``parquet_check.HashTally``)."""
    learners: int
    """Rows of the learners file."""
    days: dict[date, tuple[int, int]]
    """Per day from ``before`` on, the count and hash sum (modulo 2**64) of its events."""
    same_as: SameAs | None = None
    """What the proof since the day before's proved of the file it read (None: a whole proof)."""


def prove_kept(
    events: TableInput,
    customers: TableInput,
    *,
    now: datetime | pd.Timestamp,
    directory: Path,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Proof:
    """``parquet_check.prove_clean``, checking only the events since the proof kept in
    ``directory`` when it holds, and keeping this one's there when clean (see the module).

    A state that cannot be written is one warning: the proof is right either way.

    Returns:
        The proof; its ``how`` says whether the events since a bound or all were checked.
    """
    files = checkable_files(events, customers)
    if isinstance(files, Proof):
        return files
    events_path, customers_path = files
    own = con is None
    con = connect() if con is None else con
    try:
        return _proved(con, events_path, customers_path, pd.Timestamp(now), Path(directory))
    except duckdb.Error as error:
        return unreadable(error)
    finally:
        if own:
            con.close()


def _proved(
    con: duckdb.DuckDBPyConnection, events: Path, customers: Path, now: pd.Timestamp, at: Path
) -> Proof:
    now_us = instant_us(now)
    stat = events.stat()
    stamp = {"events_size": stat.st_size, "events_mtime_ns": stat.st_mtime_ns}
    record, why = _kept_record(at, events, now_us)
    if record is not None:
        source = read_checked(events)
        rows, fingerprint = con.execute(
            _KEPT_PART.format(hash=ROW_HASH, events=source, before=_bound(events, record.before))
        ).fetchall()[0]
        if (rows, fingerprint % 2**64) == (record.rows, record.fingerprint):
            return _since(con, record, events, customers, now_us, at, stamp)
        changed = f"{rows:,} events, were {record.rows:,}"
        why = f"the log before {record.before:%Y-%m-%d} changed since ({changed})"
    proof = _whole(con, events, customers, now, at, stamp)
    return Proof(proof.clean, proof.reason, f"in full: {why}")


def _kept_record(at: Path, events: Path, now_us: int) -> tuple[ProofRecord | None, str]:
    """The kept proof when it can serve this log at ``now``, else None and why not."""
    record, why = _whole_record(at)
    if record is None:
        return None, why
    if record.events_path != str(events.resolve()):
        return None, f"the kept proof is of another log ({record.events_path})"
    if instant_us(record.now) > now_us:
        return None, f"the kept proof was made at {record.now}, after now"
    return record, ""


def kept_record(directory: Path) -> ProofRecord | None:
    """The proof kept in ``directory`` when it is whole and of these checks, else None: what
    ``features.carry`` reads to know, without a scan of its own, that a log appended since the
    day before holds the events that day read (``ProofRecord.same_as``)."""
    return _whole_record(directory)[0]


def same_before(
    proof: ProofRecord | None, events: tuple[str, int, int], then: tuple[int, int]
) -> datetime | None:
    """The midnight before which, as ``proof`` says, the proved file ``events`` (its path, size
    and modification time) holds the events of that file's version ``then`` (size and
    modification time); None when the proof says nothing of those two (none, a whole proof,
    another file or version)."""
    if proof is None or proof.same_as is None:
        return None
    proved = (proof.events_path, proof.events_size, proof.events_mtime_ns)
    since = (proof.same_as.events_size, proof.same_as.events_mtime_ns)
    return proof.same_as.before if (proved, since) == (events, then) else None


def _whole_record(directory: Path) -> tuple[ProofRecord | None, str]:
    """The record kept in ``directory`` when it is whole (its learners file too) and of these
    checks, else None and why not."""
    record_path, learners_path = directory / RECORD_NAME, directory / LEARNERS_NAME
    if not record_path.is_file():
        return None, "no kept proof"
    try:
        record = ProofRecord.model_validate_json(record_path.read_bytes())
        learners = pq.read_metadata(learners_path).num_rows  # a file cut short has no footer
    except (OSError, ValueError) as error:  # pydantic's ValidationError, pyarrow's ArrowInvalid
        return None, f"the kept proof is unreadable ({type(error).__name__})"
    if record.version != proof_version() or learners != record.learners:
        return None, "the kept proof was made otherwise (other checks or another version)"
    return record, ""


def _since(
    con: duckdb.DuckDBPyConnection,
    record: ProofRecord,
    events: Path,
    customers: Path,
    now_us: int,
    at: Path,
    stamp: dict[str, int],
) -> Proof:
    """The events from the record's bound on checked as a whole log's, every learner merged."""
    recent = _bound(events, record.before, ">=") + " OR ts IS NULL"  # a null ts: new (and bad)
    con.execute(_RECENT.format(events=read_checked(events), recent=recent))
    kept = parquet_source(at / LEARNERS_NAME)
    learners = _MERGED.format(
        kept=kept, grouped=_GROUPED.format(events="proof_recent"), recent="true"
    )
    proof, _ = checks_proof(con, events.name, "proof_recent", learners, customers, now_us)
    added = con.execute("SELECT count(*) FROM proof_recent").fetchall()[0][0]
    how = f"since {record.before:%Y-%m-%d}: {added:,} events checked, {record.rows:,} kept"
    if proof.clean:
        days = _day_tallies(con, "proof_recent", "ts IS NOT NULL")
        same_as = SameAs(
            events_size=record.events_size, events_mtime_ns=record.events_mtime_ns,
            before=_same_before(record, days),
        )  # fmt: skip
        update = {**stamp, "same_as": same_as}
        _keep_since(con, record, events, kept, at, now_us, days, update)
    con.execute("DROP TABLE proof_recent")
    return Proof(proof.clean, proof.reason, how)


def _same_before(record: ProofRecord, days: dict[date, tuple[int, int]]) -> datetime:
    """The midnight before which a file whose events before the record's bound are the kept
    ones, and whose days from it on tally ``days``, holds the events of the record's file: the
    first of the record's days that differs, or the midnight after the record's last day."""
    first, last = record.before.date(), max(record.days, default=None)
    day = first
    while last is not None and day <= last and days.get(day) == record.days.get(day):
        day += timedelta(days=1)
    return datetime.combine(day, time())


def _day_tallies(con: duckdb.DuckDBPyConnection, events: str, where: str) -> dict:
    """Per day (UTC) of the events where ``where`` holds: their count and hash sum mod 2**64."""
    rows = con.execute(_DAYS.format(hash=ROW_HASH, events=events, where=where)).fetchall()
    return {day: (count, total % 2**64) for day, count, total in rows}


def _keep_since(
    con: duckdb.DuckDBPyConnection,
    record: ProofRecord,
    events: Path,
    kept: str,
    at: Path,
    now_us: int,
    days: dict[date, tuple[int, int]],
    update: dict[str, object],
) -> None:
    """The next day's state: the record's kept part plus the new events before the bound of
    the log's last event (``_kept_bound``), and of ``days`` (the new events' days, as
    ``_day_tallies`` counts them) those from that bound on."""
    last = max(days, default=None)
    before = record.before if last is None else max(record.before, _kept_bound(last))
    bound = _bound(events, before)
    rows, fingerprint = con.execute(
        _KEPT_PART.format(hash=ROW_HASH, events="proof_recent", before=bound)
    ).fetchall()[0]
    learners = _MERGED.format(
        kept=kept, grouped=_GROUPED.format(events="proof_recent"), recent=bound
    )
    updated = record.model_copy(
        update={
            "now": pd.Timestamp(now_us, unit="us").to_pydatetime(),
            "before": before,
            "rows": record.rows + rows,
            "fingerprint": (record.fingerprint + fingerprint) % 2**64,
            "days": {day: tally for day, tally in days.items() if day >= before.date()},
            **update,
        }
    )
    _save(con, learners, updated, at)


def _whole(
    con: duckdb.DuckDBPyConnection,
    events: Path,
    customers: Path,
    now: pd.Timestamp,
    at: Path,
    stamp: dict[str, int],
) -> Proof:
    """The whole proof, which keeps a clean log's events before its kept bound: their learners
    from its learners' step, their count and hash sum from its duplicates' step."""
    source = read_checked(events)
    latest = con.execute(f"SELECT max(ts) FROM {source}").fetchall()[0][0]
    if latest is None:  # no events: not clean (``no_events``), nothing to keep
        return values_proof(con, events, customers, instant_us(now))
    before = _kept_bound(latest)
    kept = _bound(events, before)
    con.execute(_WHOLE_LEARNERS.format(kept=kept, events=source))
    proof, tally = checks_proof(
        con, events.name, source, "proof_learners", customers, instant_us(now), tally=kept
    )
    if tally is not None:
        naive = utc_instant(now).tz_localize(None)
        days = _day_tallies(con, source, _bound(events, before, ">="))
        record = ProofRecord(
            version=proof_version(), events_path=str(events.resolve()), now=naive, before=before,
            rows=tally.rows, fingerprint=tally.fingerprint, learners=0, days=days, **stamp,
        )  # fmt: skip
        _save(con, _WHOLE_KEPT, record, at)
    con.execute("DROP TABLE proof_learners")
    return proof


def _save(con: duckdb.DuckDBPyConnection, learners: str, record: ProofRecord, at: Path) -> None:
    """Write the learners, then the record (last: it says the state is whole), each file whole
    or not at all (``features.parquet_source.copy_whole``)."""
    record_path, learners_path = at / RECORD_NAME, at / LEARNERS_NAME
    try:
        at.mkdir(parents=True, exist_ok=True)
        record_path.unlink(missing_ok=True)
        copy_whole(con, f"SELECT * FROM {learners}", learners_path)
        whole = record.model_copy(update={"learners": pq.read_metadata(learners_path).num_rows})
        replace_whole(record_path, lambda partial: partial.write_text(whole.model_dump_json()))
    except (OSError, duckdb.IOException) as error:
        logger.warning(
            "inputs: the proof could not be kept in %s (%s); the next day proves the whole log",
            at, error,
        )  # fmt: skip


def proof_version() -> str:
    """A digest of the checks and of what they compare with: a kept proof of other checks is
    not this one's."""
    parts = (*CHECKS_SQL, _RECENT, _KEPT_PART, _GROUPED, _MERGED, _WHOLE_LEARNERS, _WHOLE_KEPT)
    parts += (_DAYS,)
    parts += (str(EARLIEST_INSTANT), str(LATE_DAYS))
    text = "\n".join((*parts, duckdb.__version__))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kept_bound(latest: date | datetime) -> pd.Timestamp:
    """The kept part's bound of a log whose last event is ``latest`` (a ``ts`` DuckDB returned,
    or its UTC day): the midnight (naive UTC) ``LATE_DAYS`` before the one that begins its day."""
    return utc_instant(latest).tz_localize(None).floor("D") - pd.Timedelta(days=LATE_DAYS)


def _bound(events: Path, before: datetime, compare: str = "<") -> str:
    """``ts < before`` (or ``compare``) as DuckDB reads the file's ``ts``, so that the parquet
    reader skips the row groups its statistics put on the other side (on a log in time order,
    reading the events since the bound took 0.32 s at 1M x 60 where ``NOT coalesce(ts < ...)``
    took 1.07 s): a zoned column is compared with the UTC instant, a naive one (UTC by the
    contract) with the naive timestamp, whatever the session's time zone."""
    kind = pq.read_schema(events).field("ts").type
    literal = timestamp_literal(pd.Timestamp(before))
    if getattr(kind, "tz", None) and kind.unit != "ns":  # parquet_source made zoned ns naive
        literal = f"TIMESTAMPTZ '{pd.Timestamp(before).isoformat(sep=' ')}+00:00'"
    return f"ts {compare} {literal}"


__all__ = [
    "LATE_DAYS",
    "LEARNERS_NAME",
    "RECORD_NAME",
    "ProofRecord",
    "SameAs",
    "kept_record",
    "proof_version",
    "prove_kept",
    "same_before",
]
