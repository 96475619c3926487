"""A proof in DuckDB that parquet inputs already meet their contracts: the batch's fast path.

``features.validation`` reads both files into pandas and checks every value. At 1M learners x 60
days (59M events) that took 60-79 s and 9.4 GiB of memory (2 cores), every day, before the
batch's DuckDB read the same files again for the features. A log that meets its contracts, as a
scheduled day's log does, needs none of that: ``prove_clean`` runs the contracts' checks as
counts in DuckDB, over the files as they are, in bounded memory:

1. the schemas, from the files' footers (pyarrow): exactly the contract's columns, each of a
   type the features read as the validation would convert it (text; a timestamp of any unit,
   naive = UTC; a float), and no index stored by pandas (pandas would read it back as the index,
   not as a column);
2. one pass over the customers: no null or blank id (none even starting with whitespace as
   Python's ``str.isspace`` has it), no repeated id, known product tags, enrolment present,
   from 2000 on and not after ``now``, mrr neither negative, infinite nor NaN;
3. the events' columns: ids (per distinct learner, with their event counts and first event,
   which alone meet the customers: every id a customer's, no event before its learner's
   enrolment), timestamps and durations row by row, event types and channels per distinct value
   against the vocabularies (``_LEARNER_CHECKS``, ``_ROW_CHECKS``: four narrow passes, not one join
   of every event);
4. no exact duplicate events: no two equal hashes of the rows (ts to the microsecond, as the
   validation compares them), found by sorting the hashes. Equal rows hash equal, so a hash
   collision can only refuse a clean log, never pass a duplicate.

It decides, it does not report. Anything it finds, or cannot judge (a mapping, CSV, a frame,
another column type, NaN where pandas reads a null), sends the caller to the full validation,
which reports every problem and drops exact duplicates as before. So the proof is stricter than
the validation, never looser: ``tests/features/test_parquet_check.py`` holds it to every input
the validation refuses or changes. What it proves is what the batch's DuckDB path relies on: the
files read as they are give the features the validated frames give.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.parquet_source import parquet_path as _parquet_path
from features.parquet_source import parquet_source
from features.schemas import CUSTOMER_CONTRACT, EARLIEST_INSTANT, EVENT_CONTRACT, ColumnContract
from features.validation_report import utc_instant
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS, PRODUCT_TAGS
from features.window_sql import _sql_literal
from features.workspace import TableInput, connect

WHITESPACE_CODES = (
    9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197,
    8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288,
)  # fmt: skip
"""The code points ``str.strip`` strips (``str.isspace``; the validation's blank id is one it
strips to nothing), written out rather than found by a loop over every code point at import
(~0.05 s of every ``lstep score`` start); a test holds the list to Python's."""


@dataclass(frozen=True)
class Proof:
    """Whether the inputs were proved clean, and if not the first reason.

    Attributes:
        clean: every check held: the files can be read as they are.
        reason: why not (one line naming the file and the check), empty when clean.
        how: what was checked: "in full", or (``features.kept_proof``) the events since a
            kept proof's bound, or in full and why not since it.
    """

    clean: bool
    reason: str = ""
    how: str = "in full"


def prove_clean(
    events: TableInput,
    customers: TableInput,
    *,
    now: datetime | pd.Timestamp,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Proof:
    """Prove in DuckDB that the events and customers files meet their contracts (see module).

    Args:
        events: the event log (only a parquet path can be proved).
        customers: the customers (only a parquet path can be proved).
        now: events and enrolments after this instant are in the future; naive means UTC.
        con: the DuckDB connection to use (a new one, closed after, when None).

    Returns:
        ``Proof(True)`` when every check held; else the first reason, for the caller's log.
    """
    files = checkable_files(events, customers)
    if isinstance(files, Proof):
        return files
    own = con is None
    con = connect() if con is None else con
    try:
        return values_proof(con, *files, instant_us(now))
    except duckdb.Error as error:
        return unreadable(error)
    finally:
        if own:
            con.close()


def checkable_files(events: TableInput, customers: TableInput) -> tuple[Path, Path] | Proof:
    """The events and customers parquet files when their schemas read as the contracts' (step 1
    of the module docstring), else why not."""
    files = _parquet_file(events, "events"), _parquet_file(customers, "customers")
    for checked in files:
        if isinstance(checked, Proof):
            return checked
    events_path, customers_path = files
    for path, contract in ((events_path, EVENT_CONTRACT), (customers_path, CUSTOMER_CONTRACT)):
        problem = _schema_problem(path, contract)
        if problem:
            return Proof(False, f"{path.name}: {problem}")
    return events_path, customers_path


def unreadable(error: duckdb.Error) -> Proof:
    """A type or value DuckDB cannot read as the checks do: left to the validation."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return Proof(False, f"could not be checked in DuckDB ({first})")


def _parquet_file(data: TableInput, role: str) -> Path | Proof:
    """The parquet file the features would read (``features.workspace``'s check), or why not."""
    if not isinstance(data, str | Path):
        return Proof(False, f"{role}: a frame, not a parquet file")
    try:
        return _parquet_path(data, role)
    except (FileNotFoundError, ValueError) as error:
        return Proof(False, str(error))


def _schema_problem(path: Path, contract: tuple[ColumnContract, ...]) -> str:
    """What keeps the file's schema from reading as the contract's columns ('' when nothing)."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        return f"unreadable ({error})"
    metadata = schema.pandas_metadata or {}
    if any(isinstance(index, str) for index in metadata.get("index_columns", [])):
        return "holds a pandas index, which pandas reads back as the index"
    names = sorted(schema.names)
    expected = sorted(column.name for column in contract)
    if names != expected:
        return f"columns {names}, the contract's are {expected}"
    for column in contract:
        kind = schema.field(column.name).type
        if not _reads_as(kind, column):
            return f"column {column.name} is {kind}, not {column.kind}"
    return ""


def _reads_as(kind: pa.DataType, column: ColumnContract) -> bool:
    """Whether a column of this type reads, unconverted, as the validation's converted one."""
    if column.kind == "text":
        return pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if column.kind == "timestamp":
        return pa.types.is_timestamp(kind)
    return pa.types.is_float64(kind) or pa.types.is_float32(kind)


def values_proof(
    con: duckdb.DuckDBPyConnection, events: Path, customers: Path, now_us: int
) -> Proof:
    """Steps 2-4 of the module docstring: the first file whose counts are not all zero."""
    event_source = read_checked(events)
    learners = _LEARNERS.format(events=event_source)
    return checks_proof(con, events.name, event_source, learners, customers, now_us)[0]


@dataclass(frozen=True)
class HashTally:
    """The rows of a condition and the sum of their ``ROW_HASH`` modulo 2**64 (``fingerprint``)."""

    rows: int
    fingerprint: int


def checks_proof(
    con: duckdb.DuckDBPyConnection,
    name: str,
    events: str,
    learners: str,
    customers: Path,
    now_us: int,
    *,
    tally: str | None = None,
) -> tuple[Proof, HashTally | None]:
    """Steps 2-4 over the relation ``events`` (of the file ``name``) whose per-learner counts
    and first events are ``learners`` (``_LEARNERS``' columns): the customers' checks, the
    learners', the rows', the duplicates'; the first whose counts are not all zero.

    ``tally``: a condition on the events whose rows and hash sum the duplicates step counts
    from the hashes it fetches anyway (``features.kept_proof``), returned when every check held.
    """
    limits = {"earliest": instant_us(EARLIEST_INSTANT), "now": now_us}
    customer_source = read_checked(customers)
    steps = (
        (customers.name, _CUSTOMER_CHECKS.format(customers=customer_source, **limits)),
        (name, _LEARNER_CHECKS.format(learners=learners, customers=customer_source)),
        *((name, checks.format(events=events, **limits)) for checks in _ROW_CHECKS),
    )
    for file_name, sql in steps:
        # over no rows DuckDB's count_if is null, not 0: nothing to refuse (an empty log is
        # the duplicates step's ``no_events``)
        counts = con.execute(sql).fetch_df().iloc[0].fillna(0)
        proof = _proof_of(file_name, {check: int(count) for check, count in counts.items()})
        if not proof.clean:
            return proof, None
    counts, tallied = _duplicates(con, events, tally)
    proof = _proof_of(name, counts)
    return proof, tallied if proof.clean else None


def _proof_of(name: str, counts: dict[str, int]) -> Proof:
    """Clean when every count is 0, else the counts that are not, after the file's name."""
    failed = {check: count for check, count in counts.items() if count}
    listed = ", ".join(f"{check} {count:,}" for check, count in failed.items())
    return Proof(not failed, f"{name}: {listed}" if failed else "")


def _duplicates(
    con: duckdb.DuckDBPyConnection, events: str, tally: str | None = None
) -> tuple[dict[str, int], HashTally | None]:
    """Rows whose hash equals another row's (``hash_repeats``; an empty log too), and the
    ``HashTally`` of the rows where ``tally`` holds (None without it).

    The hashes are sorted by numpy: at 1M learners (59M events) DuckDB's
    ``count(DISTINCT hash)`` took 8.7 s at 2.6 GiB peak (a hash table of every row), fetching the
    hashes 2.1 s and sorting them 1.1 s at 1.0 GiB.
    """
    flag = "" if tally is None else f", coalesce({tally}, false) AS tallied"
    fetched = con.execute(_ROW_HASHES.format(events=events, tallied=flag)).fetchnumpy()
    hashes = np.asarray(fetched["row_hash"], dtype=np.uint64)
    tallied = None
    if tally is not None:  # before the sort: the flags are in the fetched rows' order
        rows = np.asarray(fetched["tallied"], dtype=bool)
        fingerprint = np.sum(hashes, where=rows, dtype=np.uint64)  # wraps: modulo 2**64
        tallied = HashTally(int(np.count_nonzero(rows)), int(fingerprint))
    repeats = hash_repeats(hashes)
    counts = {"no_events": int(len(hashes) == 0), "exact_duplicates_or_hash_collisions": repeats}
    return counts, tallied


def hash_repeats(hashes: np.ndarray) -> int:
    """How many hashes equal an earlier one once sorted (a 64-bit hash per row); ``hashes``
    are sorted in place (the caller's fetched array: a copy is another 475 MB at 59M rows).

    One sort of them all: numpy's (2.x) vectorised quicksort took 0.84 s for 59M hashes on
    these machines (AVX-512). Cutting the range into a slice per core by the top bits and
    sorting the slices on threads, as before, spent 3.1 s, most of it making the slices. On an
    AMD Zen 4 (EPYC) the same AVX-512 sort took 4.7 s: its partition's memory-destination
    compress store is microcoded there (numpy/x86-simd-sort#6); numpy's AVX2 sort
    (``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"``) took a fifth of that. A day
    with a kept proof (``features.kept_proof``) sorts only the hashes of its new events.
    """
    hashes.sort()
    return int(np.count_nonzero(hashes[1:] == hashes[:-1]))


def read_checked(path: Path) -> str:
    """The file as DuckDB reads it for the checks: NaN possible in every float column.

    Parquet's min/max statistics leave NaN out (the format says so), and DuckDB (2.0) takes a
    float column without recorded NaN for one without any (``parquet_can_have_nan`` is false by
    default, duckdb/duckdb#25521): ``isnan`` of a pyarrow-written column was folded to false.
    """
    return parquet_source(path, ", can_have_nan = true")


def instant_us(value: datetime | pd.Timestamp) -> int:
    """Microseconds since the epoch of an instant (naive means UTC, as the validation reads it)."""
    return int(utc_instant(value).value // 1000)  # Timestamp.value is in ns whatever the unit


def _in(values: tuple[str, ...] | list[str]) -> str:
    return "(" + ", ".join(_sql_literal(value) for value in values) + ")"


def _blank(column: str) -> str:
    """Empty, or starting with whitespace: every blank id does (stricter than blank: an id like
    " C1" is left to the validation too). DuckDB's ``trim`` with Python's 29 whitespace
    characters cost 6.5 s for 12M ids; the first character's code point a tenth of that."""
    codes = ", ".join(map(str, WHITESPACE_CODES))
    return f"({column} = '' OR unicode({column}) IN ({codes}))"


def _bad_number(column: str) -> str:
    """Negative, infinite, or NaN (a value to DuckDB, a null to the validation's pandas); null
    when the value is. DuckDB orders NaN above every number, infinity too, so two comparisons
    find all of them: over 59M durations 0.64-0.99 s against ``isnan OR isinf OR < 0``'s 1.2 s."""
    return f"({column} < 0 OR {column} >= 'infinity'::DOUBLE)"


def _bad_instant(column: str) -> str:
    """Null, before 2000 or after now, compared in microseconds (naive = UTC, as validated)."""
    us = f"epoch_us({column})"
    return f"({column} IS NULL OR {us} < {{earliest}} OR {us} > {{now}})"


# Every count must be 0. `count_if` of a null condition counts nothing, so each condition is
# written to be true (not null) on the rows it refuses.
_CUSTOMER_CHECKS = f"""
SELECT count_if(customer_id IS NULL OR {_blank("customer_id")}) AS null_or_blank_id,
       count(*) - count(DISTINCT customer_id) AS repeated_id,
       count_if(product_tag IS NULL OR product_tag NOT IN {_in(list(PRODUCT_TAGS))})
           AS unknown_product_tag,
       count_if({_bad_instant("enrolled_at")}) AS enrolled_at_missing_early_or_future,
       count_if({_bad_number("mrr")}) AS mrr_negative_infinite_or_nan
FROM {{customers}}
"""

# The events' checks in four passes of a column or two each; at 1M learners x 60 days they took
# 3.0-3.3 s (learner-ordered log) and ~5 s (time-ordered) where one pass over every event joined
# to its customer took 5.3-5.6 s and 8.5-9.9 s: the join of every event and the text checks of
# every row's id cost more than grouping the ids and checking the ~1M distinct ones. A learner
# counts once in the enrolment check (their first event is before it), each event elsewhere.
_LEARNERS = """
(SELECT customer_id, count(*) AS events, min(epoch_us(ts)) AS first_us
 FROM {events} GROUP BY customer_id)
"""
_LEARNER_CHECKS = f"""
SELECT sum(l.events) FILTER (WHERE l.customer_id IS NULL OR {_blank("l.customer_id")})
           AS null_or_blank_id,
       sum(l.events) FILTER (WHERE l.customer_id IS NOT NULL AND c.customer_id IS NULL)
           AS unknown_customer,
       count_if(coalesce(l.first_us < epoch_us(c.enrolled_at), false))
           AS learners_with_events_before_enrolment
FROM {{learners}} AS l LEFT JOIN {{customers}} AS c ON c.customer_id = l.customer_id
"""
_ROW_CHECKS = (
    f"""
SELECT count_if({_bad_instant("ts")}) AS ts_missing_early_or_future,
       count_if({_bad_number("duration_s")}) AS duration_negative_infinite_or_nan
FROM {{events}}
""",
    f"""
SELECT sum(events) FILTER (
           WHERE event_type IS NULL OR event_type NOT IN {_in(CANONICAL_EVENT_TYPES)}
       ) AS unknown_event_type
FROM (SELECT event_type, count(*) AS events FROM {{events}} GROUP BY event_type)
""",
    f"""
SELECT sum(events) FILTER (WHERE channel NOT IN {_in(CHANNELS)}) AS unknown_channel
FROM (SELECT channel, count(*) AS events FROM {{events}} GROUP BY channel)
""",
)

# Equal rows hash equal (ts to the microsecond, as the validation compares them): sorted, a
# duplicate sits next to its twin. An empty log is left to the validation too.
ROW_HASH = "hash(customer_id, epoch_us(ts), event_type, CAST(duration_s AS DOUBLE), channel, item)"
"""A row's hash, as the duplicates step compares them (and ``features.kept_proof`` sums them)."""
_ROW_HASHES = f"SELECT {ROW_HASH} AS row_hash{{tallied}} FROM {{events}}"

CHECKS_SQL = (_CUSTOMER_CHECKS, _LEARNERS, _LEARNER_CHECKS, *_ROW_CHECKS, _ROW_HASHES)
"""Every check's SQL (what a kept proof's version hashes: another check, another proof)."""


__all__ = [
    "CHECKS_SQL",
    "ROW_HASH",
    "HashTally",
    "Proof",
    "checkable_files",
    "checks_proof",
    "hash_repeats",
    "instant_us",
    "prove_clean",
    "read_checked",
    "unreadable",
    "values_proof",
]
