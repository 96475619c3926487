"""Loading and validating the input files: events and customers (DESIGN §3).

Every problem becomes a ``Problem`` that names the file, the column, the number of rows and a few
offending values, e.g. ``events.parquet: column ts: 3 rows have ts in the future (max 2031-01-01
00:00:00+00:00)``. Nothing is filtered quietly: the only rows ever dropped are exact duplicate
events, which are counted and reported as a note. Any error makes the report fail; the CLI exits 1.

Readers take parquet or CSV paths (chosen by suffix: ``.parquet``/``.pq``, ``.csv`` possibly
compressed as ``.csv.gz`` etc.) or DataFrames. CSV cells are read as text and converted here, so an
id like ``007`` keeps its zeros and an empty cell is the only null.

Timestamps: ISO 8601 text or datetime columns. **Naive timestamps are read as UTC**; tz-aware ones
are converted to UTC. The result is ``datetime64[us, UTC]`` (see ``features.schemas``). "In the
future" is relative to the ``now``/``as_of_limit`` the caller passes: the code never reads the
clock.

Optional columns (``duration_s``, ``channel``, ``item``, ``mrr``) may be absent: they are added as
all-null columns with a note. Every check is vectorised (value counts on distinct values, hashing
for duplicates, an index lookup for the customer join), so 10M-row files take seconds, not minutes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pyarrow_lib

from features.column_checks import NULL_DTYPES, apply_column_mapping, contract_frame, is_text
from features.frame_checks import final_check
from features.mapping import EventMapping, load_mapping, map_event_types
from features.schemas import (
    CUSTOMER_CONTRACT,
    EVENT_CONTRACT,
    ColumnContract,
    customers_schema,
    events_schema,
)
from features.validation_report import (
    EXAMPLES_SHOWN,
    Findings,
    InputError,
    Loaded,
    Problem,
    ValidatedInputs,
    ValidationReport,
    counted,
    format_value,
    plural,
    rows_have,
    utc_instant,
)

_COMPRESSIONS = {".gz", ".bz2", ".zip", ".xz", ".zst"}

TableInput = pd.DataFrame | str | Path

# --- reading -------------------------------------------------------------------------------------


def _source_name(path_or_frame: TableInput, default: str) -> str:
    return default if isinstance(path_or_frame, pd.DataFrame) else Path(path_or_frame).name


def _format_of(path: Path) -> str | None:
    """``parquet``, ``csv`` or None, from the file's suffixes."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in {".parquet", ".pq"} and len(suffixes) == len(path.suffixes):
        return "parquet"
    return "csv" if last == ".csv" else None


def _read_csv(path: Path) -> pd.DataFrame:
    # Everything as text, only empty cells as null: conversions happen in the checks, which can
    # then name the values they could not convert ("NA" stays the string "NA").
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], engine="pyarrow")


def _read_table(path_or_frame: TableInput, findings: Findings) -> pd.DataFrame | None:
    """The input as a frame with a plain RangeIndex, or None (and an error) when unreadable."""
    if isinstance(path_or_frame, pd.DataFrame):
        frame = path_or_frame
        named_index = any(name is not None for name in frame.index.names)
        return frame.reset_index(drop=not named_index)
    path = Path(path_or_frame)
    file_format = _format_of(path)
    if file_format is None:
        findings.error(None, f"unsupported file type (expected .parquet or .csv): {path}", 0)
        return None
    if not path.exists():
        findings.error(None, f"file not found: {path}", 0)
        return None
    try:
        return pd.read_parquet(path) if file_format == "parquet" else _read_csv(path)
    except (OSError, ValueError, pyarrow_lib.ArrowException) as error:
        findings.error(None, f"cannot be read as {file_format}: {error}", 0)
        return None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet or CSV file (by suffix) as it is, for inputs checked elsewhere (spines).

    Raises:
        ValueError: naming the file when it is missing, of an unsupported type or unreadable.
    """
    findings = Findings(source=Path(path).name)
    frame = _read_table(path, findings)
    if frame is None:
        raise ValueError("; ".join(str(problem) for problem in findings.problems))
    return frame


# --- events only: duplicates and event types -----------------------------------------------------


def _hashable_codes(values: pd.Series) -> pd.Series | np.ndarray:
    """Text as factorised integer codes (nulls share code -1); other columns as they are."""
    if is_text(values.dtype) or isinstance(values.dtype, pd.CategoricalDtype):
        return pd.factorize(values)[0]
    return values


def exact_duplicates(frame: pd.DataFrame, narrow_by: Iterable[str] | None = None) -> np.ndarray:
    """Boolean mask of rows equal in every column to an earlier row (the first one is kept).

    Rows are hashed first, on ``narrow_by`` only when given (equal rows agree there too, and two
    cheap columns hash much faster than all of them); only the rows sharing a hash are then compared
    exactly, so neither a collision nor the narrowing can ever drop a distinct row.

    Args:
        frame: the rows.
        narrow_by: columns to find candidate rows with, e.g. ``("customer_id", "ts")``.
    """
    columns = frame.columns if narrow_by is None else list(narrow_by)
    # Integer codes hash far faster than (arrow) strings; equal values get equal codes.
    keys = pd.DataFrame({c: _hashable_codes(frame[c]) for c in columns})
    hashes = pd.util.hash_pandas_object(keys, index=False)
    candidates = hashes.duplicated(keep=False).to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    if candidates.any():
        mask[candidates] = frame[candidates].duplicated(keep="first").to_numpy()
    return mask


def _drop_exact_duplicates(frame: pd.DataFrame, findings: Findings) -> tuple[pd.DataFrame, int]:
    duplicated = exact_duplicates(frame, narrow_by=("customer_id", "ts"))
    dropped = int(duplicated.sum())
    if not dropped:
        return frame, 0
    findings.note(None, f"{plural(dropped, 'exact duplicate row')} dropped", dropped)
    return frame[~duplicated].reset_index(drop=True), dropped


def _translate_event_types(
    frame: pd.DataFrame, mapping: EventMapping | None, allow_unknown: bool, findings: Findings
) -> pd.DataFrame:
    """Map foreign types onto the vocabulary; unmapped ones are an error, or ``other`` + a note."""
    if "event_type" in findings.unusable:
        return frame
    mapped = map_event_types(frame["event_type"], mapping, allow_unknown=allow_unknown)
    if mapped.unmapped:
        unmapped = pd.Series(mapped.unmapped)
        rows = mapped.unmapped_rows
        where = "not mapped by the mapping" if mapping else "outside the canonical vocabulary"
        if mapped.became_other:
            message = f"{rows_have(rows)} event types {where}: loaded as 'other'"
            findings.note("event_type", message, rows, counted(unmapped))
        else:
            message = (
                f"{rows_have(rows)} event types {where} ({plural(len(unmapped), 'type')}); "
                "map them in a "
                "mapping file, or allow unknown types to load them as 'other'"
            )
            findings.error("event_type", message, rows, counted(unmapped))
    return frame.assign(event_type=mapped.values)


# --- public loaders ------------------------------------------------------------------------------


def _empty(contract: tuple[ColumnContract, ...]) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=NULL_DTYPES[c.kind]) for c in contract})


def _load_events(
    path_or_frame: TableInput,
    mapping: EventMapping | None,
    allow_unknown: bool,
    as_of_limit: pd.Timestamp | None,
) -> Loaded:
    findings = Findings(_source_name(path_or_frame, "events"))
    raw = _read_table(path_or_frame, findings)
    if raw is None:
        findings.unusable.update(c.name for c in EVENT_CONTRACT)
        return Loaded(_empty(EVENT_CONTRACT), findings, rows=0)
    renamed = apply_column_mapping(raw, mapping, findings)
    frame = contract_frame(renamed, EVENT_CONTRACT, findings, as_of_limit)
    # Duplicates are judged before type mapping: two distinct foreign types that both become
    # "other" are still two events.
    frame, dropped = _drop_exact_duplicates(frame, findings)
    frame = _translate_event_types(frame, mapping, allow_unknown, findings)
    frame = final_check(frame, events_schema(allow_other=allow_unknown), findings)
    return Loaded(frame, findings, rows=len(raw), duplicates_dropped=dropped)


def _load_customers(path_or_frame: TableInput, as_of_limit: pd.Timestamp | None) -> Loaded:
    findings = Findings(_source_name(path_or_frame, "customers"))
    raw = _read_table(path_or_frame, findings)
    if raw is None:
        findings.unusable.update(c.name for c in CUSTOMER_CONTRACT)
        return Loaded(_empty(CUSTOMER_CONTRACT), findings, rows=0)
    frame = contract_frame(raw, CUSTOMER_CONTRACT, findings, as_of_limit)
    frame = final_check(frame, customers_schema(), findings)
    return Loaded(frame, findings, rows=len(raw))


def load_events(
    path_or_frame: TableInput,
    *,
    mapping: EventMapping | None = None,
    allow_unknown: bool = False,
    as_of_limit: datetime | pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, list[Problem], int]:
    """Read and check an event log.

    Args:
        path_or_frame: a parquet/CSV path or a DataFrame.
        mapping: renames and type translations for a foreign log.
        allow_unknown: load event types the vocabulary/mapping does not cover as ``other`` (a note)
            instead of failing.
        as_of_limit: events after this instant are "in the future" (an error); naive means UTC.
            None skips that check.

    Returns:
        The events in contract form, the problems found (errors and notes), and the number of
        exact duplicate rows dropped. The frame satisfies ``EventsSchema`` only if no problem is an
        error.
    """
    limit = None if as_of_limit is None else utc_instant(as_of_limit)
    loaded = _load_events(path_or_frame, mapping, allow_unknown, limit)
    return loaded.frame, loaded.findings.problems, loaded.duplicates_dropped


def load_customers(
    path_or_frame: TableInput, *, as_of_limit: datetime | pd.Timestamp | None = None
) -> tuple[pd.DataFrame, list[Problem]]:
    """Read and check a customers table.

    Args:
        path_or_frame: a parquet/CSV path or a DataFrame.
        as_of_limit: an enrolled_at after this instant is "in the future" (an error); None skips it.

    Returns:
        The customers in contract form and the problems found. The frame satisfies
        ``CustomersSchema`` only if no problem is an error.
    """
    limit = None if as_of_limit is None else utc_instant(as_of_limit)
    loaded = _load_customers(path_or_frame, limit)
    return loaded.frame, loaded.findings.problems


def valid_customers(
    path_or_frame: TableInput, *, as_of_limit: datetime | pd.Timestamp | None = None
) -> pd.DataFrame:
    """``load_customers``, refusing a table with an error: the customers in contract form.

    Raises:
        ValueError: every error found, joined by "; " (each names the file and the column).
    """
    frame, problems = load_customers(path_or_frame, as_of_limit=as_of_limit)
    errors = [str(problem) for problem in problems if problem.severity == "error"]
    if errors:
        raise ValueError("; ".join(errors))
    return frame


# --- cross-checks and the whole validation -------------------------------------------------------


def _customer_lookup(customers: pd.DataFrame) -> pd.DataFrame:
    """One row per known customer id (duplicates are reported elsewhere; the first one wins)."""
    known = customers[customers["customer_id"].notna()]
    return known.drop_duplicates("customer_id").reset_index(drop=True)


def _check_unknown_customers(
    codes: np.ndarray,
    distinct_ids: pd.Index,
    positions: np.ndarray,
    customers_source: str,
    findings: Findings,
) -> None:
    """Events whose id is not a customer, judged once per distinct id (``positions`` < 0)."""
    # Blank ids are an error of their own already (and null ids have no code): not "unknown".
    unknown_ids = (positions < 0) & (distinct_ids.str.strip() != "")
    if not unknown_ids.any():
        return
    rows = int(np.append(unknown_ids, False)[codes].sum())  # code -1 (null id) -> False
    message = (
        f"{rows_have(rows)} a customer_id not in {customers_source} "
        f"({plural(int(unknown_ids.sum()), 'distinct id')})"
    )
    examples = [format_value(v) for v in distinct_ids[unknown_ids][:EXAMPLES_SHOWN]]
    findings.error("customer_id", message, rows, examples)


def _check_before_enrolment(
    events: pd.DataFrame, positions: np.ndarray, lookup: pd.DataFrame, findings: Findings
) -> None:
    if lookup.empty:
        return
    known = positions >= 0
    enrolled = lookup["enrolled_at"].to_numpy(dtype="datetime64[us]")[np.where(known, positions, 0)]
    early = known & (events["ts"].to_numpy(dtype="datetime64[us]") < enrolled)
    if not early.any():
        return
    rows = int(early.sum())
    first = np.flatnonzero(early)[:1000]
    offenders = pd.DataFrame(
        {
            "customer_id": events["customer_id"].iloc[first].to_numpy(),
            "ts": events["ts"].to_numpy(dtype="datetime64[us]")[first],
            "enrolled_at": enrolled[first],
        }
    ).drop_duplicates("customer_id")
    examples = [
        f"{row.customer_id!r} at {pd.Timestamp(row.ts, tz='UTC')} "
        f"(enrolled {pd.Timestamp(row.enrolled_at, tz='UTC')})"
        for row in offenders.head(EXAMPLES_SHOWN).itertuples()
    ]
    customers = events["customer_id"][early].nunique()
    message = (
        f"{rows_have(rows)} ts before their customer's enrolled_at "
        f"({plural(customers, 'customer')})"
    )
    findings.error("ts", message, rows, examples)


def _cross_check(events: Loaded, customers: Loaded) -> list[Problem]:
    """Events of unknown customers and events before enrolment (errors on the events source)."""
    findings = Findings(events.findings.source)
    if "customer_id" in events.findings.unusable | customers.findings.unusable:
        return []
    lookup = _customer_lookup(customers.frame)
    # Look up each distinct id once, not each of the (10M+) events.
    codes, distinct_ids = pd.factorize(events.frame["customer_id"])
    distinct_positions = pd.Index(lookup["customer_id"]).get_indexer(distinct_ids)
    _check_unknown_customers(
        codes, pd.Index(distinct_ids), distinct_positions, customers.findings.source, findings
    )
    if not {"ts", "enrolled_at"} & (events.findings.unusable | customers.findings.unusable):
        positions = np.append(distinct_positions, -1)[codes]  # code -1 (null id) -> -1
        _check_before_enrolment(events.frame, positions, lookup, findings)
    return findings.problems


def _resolve_mapping(mapping: EventMapping | str | Path | None) -> EventMapping | None:
    if mapping is None or isinstance(mapping, EventMapping):
        return mapping
    return load_mapping(mapping)


def validate_inputs(
    events: TableInput,
    customers: TableInput,
    *,
    mapping: EventMapping | str | Path | None = None,
    allow_unknown: bool = False,
    now: datetime | pd.Timestamp,
) -> ValidatedInputs:
    """Load and check events and customers, each on its own and against each other.

    Args:
        events: events as a parquet/CSV path or a DataFrame.
        customers: customers as a parquet/CSV path or a DataFrame.
        mapping: an ``EventMapping``, or the path of a mapping YAML file, for a foreign log.
        allow_unknown: load event types the mapping does not cover as ``other`` (a note).
        now: the current instant (the CLI passes the real time; naive means UTC): events and
            enrolments after it are errors.

    Returns:
        The frames in contract form and the report; use the frames only when ``report.ok``.

    Raises:
        MappingError: when ``mapping`` is a path to an unusable mapping file.
    """
    limit = utc_instant(now)
    loaded_events = _load_events(events, _resolve_mapping(mapping), allow_unknown, limit)
    loaded_customers = _load_customers(customers, limit)
    report = ValidationReport(
        problems=(
            *loaded_events.findings.problems,
            *loaded_customers.findings.problems,
            *_cross_check(loaded_events, loaded_customers),
        ),
        events_rows=loaded_events.rows,
        customers_rows=loaded_customers.rows,
        duplicates_dropped=loaded_events.duplicates_dropped,
        events_source=loaded_events.findings.source,
        customers_source=loaded_customers.findings.source,
    )
    return ValidatedInputs(loaded_events.frame, loaded_customers.frame, report)


def load_valid_inputs(
    events: TableInput,
    customers: TableInput,
    *,
    mapping: EventMapping | str | Path | None = None,
    allow_unknown: bool = False,
    now: datetime | pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``validate_inputs`` for callers that only want clean frames.

    Returns:
        (events, customers), validated against ``EventsSchema`` and ``CustomersSchema``.

    Raises:
        InputError: when any error was found; its message is the rendered report.
        MappingError: when ``mapping`` is a path to an unusable mapping file.
    """
    validated = validate_inputs(
        events, customers, mapping=mapping, allow_unknown=allow_unknown, now=now
    )
    if not validated.report.ok:
        raise InputError(validated.report)
    return validated.events, validated.customers


__all__ = [
    "exact_duplicates",
    "load_customers",
    "load_events",
    "load_valid_inputs",
    "valid_customers",
    "validate_inputs",
]
