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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow_lib

from features.mapping import EventMapping, load_mapping, map_event_types
from features.schemas import (
    CUSTOMER_CONTRACT,
    EARLIEST_INSTANT,
    EVENT_CONTRACT,
    UTC_INSTANT,
    ColumnContract,
    customers_schema,
    events_schema,
)

EXAMPLES_SHOWN = 3
"""How many offending values a problem quotes."""
TYPES_LISTED = 10
"""How many unknown event types / tags a problem lists (with their counts)."""
_COMPRESSIONS = {".gz", ".bz2", ".zip", ".xz", ".zst"}

Severity = Literal["error", "note"]
TableInput = pd.DataFrame | str | Path


# --- problems and the report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding about an input.

    Attributes:
        source: file name (``events.parquet``) or ``events``/``customers`` for a DataFrame.
        column: the column concerned, or None for the file as a whole.
        message: what is wrong, starting with the row count where there is one.
        rows: number of rows concerned (all rows for a missing column; 0 for an unreadable file).
        examples: a few offending values, already formatted.
        severity: ``error`` fails the validation; ``note`` is information (dropped duplicates,
            types turned into ``other``, optional columns filled with nulls).
    """

    source: str
    column: str | None
    message: str
    rows: int
    examples: tuple[str, ...] = ()
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.source}: column {self.column}: " if self.column else f"{self.source}: "
        shown = f"; e.g. {', '.join(self.examples)}" if self.examples else ""
        return f"{where}{self.message}{shown}"


@dataclass(frozen=True)
class ValidationReport:
    """Everything found while loading the events and customers.

    Attributes:
        problems: errors and notes, in the order found (events, customers, then cross-checks).
        events_rows: event rows read, before exact duplicates were dropped.
        customers_rows: customer rows read.
        duplicates_dropped: exact duplicate event rows dropped.
        events_source: name of the events input in messages.
        customers_source: name of the customers input in messages.
    """

    problems: tuple[Problem, ...]
    events_rows: int
    customers_rows: int
    duplicates_dropped: int
    events_source: str = "events"
    customers_source: str = "customers"

    @property
    def errors(self) -> tuple[Problem, ...]:
        """The problems that fail the validation."""
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def notes(self) -> tuple[Problem, ...]:
        """Information that does not fail the validation."""
        return tuple(p for p in self.problems if p.severity == "note")

    @property
    def ok(self) -> bool:
        """True when there is no error (notes are fine)."""
        return not self.errors

    def summary_lines(self) -> list[str]:
        status = "passed" if self.ok else "FAILED"
        return [
            f"input validation {status}: {_plural(len(self.errors), 'error')}, "
            f"{_plural(len(self.notes), 'note')}",
            f"{self.events_source}: {_plural(self.events_rows, 'row')} read, "
            f"{_plural(self.duplicates_dropped, 'exact duplicate')} dropped",
            f"{self.customers_source}: {_plural(self.customers_rows, 'row')} read",
        ]

    def render(self) -> str:
        """Plain text: a summary, then one line per error, then one per note."""
        lines = self.summary_lines()
        lines += [f"  error: {problem}" for problem in self.errors]
        lines += [f"  note: {problem}" for problem in self.notes]
        return "\n".join(lines)


class InputError(ValueError):
    """The inputs failed validation; ``str(error)`` is the rendered report."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.render())
        self.report = report


@dataclass(frozen=True)
class ValidatedInputs:
    """The result of ``validate_inputs``.

    The frames are in contract form (columns, dtypes) with exact duplicate events dropped. They have
    passed the pandera schemas only when ``report.ok``; otherwise they hold every row as read and
    converted (unconvertible values as nulls) so that a caller can inspect them, not use them.
    """

    events: pd.DataFrame
    customers: pd.DataFrame
    report: ValidationReport


@dataclass
class _Findings:
    """Problems found in one input, and the columns too broken to check further."""

    source: str
    problems: list[Problem] = field(default_factory=list)
    unusable: set[str] = field(default_factory=set)

    def error(self, column: str | None, message: str, rows: int, examples: Iterable = ()) -> None:
        self.problems.append(Problem(self.source, column, message, rows, tuple(examples)))

    def note(self, column: str | None, message: str, rows: int, examples: Iterable = ()) -> None:
        self.problems.append(Problem(self.source, column, message, rows, tuple(examples), "note"))

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


@dataclass(frozen=True)
class _Loaded:
    frame: pd.DataFrame
    findings: _Findings
    rows: int
    duplicates_dropped: int = 0


# --- formatting helpers --------------------------------------------------------------------------


def _rows_have(count: int) -> str:
    return "1 row has" if count == 1 else f"{count:,} rows have"


def _plural(count: int, noun: str) -> str:
    """``1 error``, ``2 errors``, ``1,000 rows``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _format_value(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _examples(values: pd.Series, mask: pd.Series | np.ndarray) -> tuple[str, ...]:
    """The first few distinct offending values (looks at the first 1000 offending rows only)."""
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))[:1000]
    sample = values.iloc[positions].drop_duplicates().head(EXAMPLES_SHOWN)
    return tuple(_format_value(value) for value in sample)


def _counted(counts: pd.Series) -> tuple[str, ...]:
    """``'login' (3 rows)`` for the most frequent values of a value_counts result."""
    shown = counts.head(TYPES_LISTED)
    listed = [f"{_format_value(v)} ({n:,} {'row' if n == 1 else 'rows'})" for v, n in shown.items()]
    if len(counts) > TYPES_LISTED:
        listed.append(f"and {len(counts) - TYPES_LISTED} more")
    return tuple(listed)


def utc_instant(value: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """A point in time as a UTC ``Timestamp`` (naive values are read as UTC)."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.as_unit("us")


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


def _read_table(path_or_frame: TableInput, findings: _Findings) -> pd.DataFrame | None:
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
    findings = _Findings(source=Path(path).name)
    frame = _read_table(path, findings)
    if frame is None:
        raise ValueError("; ".join(str(problem) for problem in findings.problems))
    return frame


# --- columns: mapping renames, missing, extra -----------------------------------------------------


def _apply_column_mapping(
    frame: pd.DataFrame, mapping: EventMapping | None, findings: _Findings
) -> pd.DataFrame:
    """Rename foreign columns and leave out the ones the mapping ignores (with a note)."""
    if mapping is None:
        return frame
    columns = [str(c) for c in frame.columns]
    for foreign, target in mapping.rename_conflicts(columns).items():
        findings.error(
            target,
            f"the mapping renames {foreign} to {target}, but the file already has a {target} "
            "column; drop one of them or list it under ignore_columns",
            len(frame),
        )
    ignored = [c for c in mapping.ignore_columns if c in columns]
    if ignored:
        findings.note(None, f"columns ignored as the mapping says: {', '.join(ignored)}", 0)
    renames = {f: t for f, t in mapping.renames_for(columns).items() if f not in ignored}
    return frame.drop(columns=ignored).rename(columns=renames)


def _conform_columns(
    frame: pd.DataFrame, contract: tuple[ColumnContract, ...], findings: _Findings
) -> pd.DataFrame:
    """Report duplicated, missing and extra columns; return exactly the contract's columns.

    Missing required columns are filled with nulls and marked unusable (so no further noise is
    reported about them); missing optional columns are filled with nulls and noted.
    """
    names = [str(c) for c in frame.columns]
    frame = frame.set_axis(names, axis="columns")
    expected = [c.name for c in contract]
    for repeated in sorted({n for n in names if names.count(n) > 1}):
        findings.error(repeated, f"appears {names.count(repeated)} times", len(frame))
        findings.unusable.add(repeated)
    for extra in (n for n in dict.fromkeys(names) if n not in expected):
        findings.error(
            extra,
            f"is not part of the contract ({', '.join(expected)}); remove it, or rename or "
            "ignore it with a mapping",
            len(frame),
        )
    filled = {}
    for column in contract:
        if column.name in findings.unusable or column.name not in names:
            filled[column.name] = pd.Series(None, index=frame.index, dtype=object)
        else:
            filled[column.name] = frame[column.name]
        if column.name not in names:
            _report_missing(column, names, len(frame), findings)
    return pd.DataFrame(filled, index=frame.index)


def _report_missing(
    column: ColumnContract, found: list[str], rows: int, findings: _Findings
) -> None:
    if column.nullable:
        findings.note(column.name, "is absent: filled with nulls", rows)
        return
    findings.error(column.name, f"is missing (found columns: {', '.join(found) or 'none'})", rows)
    findings.unusable.add(column.name)


# --- conversion to the contract dtypes -----------------------------------------------------------


def _is_text(dtype: object) -> bool:
    return dtype == np.dtype(object) or pd.api.types.is_string_dtype(dtype)


def _is_textual(dtype: object) -> bool:
    """Text already, or convertible to it without losing anything (categories, integer ids)."""
    return (
        _is_text(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or (pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))
    )


def _to_text(values: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    return values.astype("str"), None


def _to_timestamps(values: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    """UTC instants; naive values are read as UTC. Returns the unparseable-values mask for text."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.as_unit("us"), None
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").dt.as_unit("us"), None
    parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    parsed = parsed.dt.as_unit("us")
    return parsed, parsed.isna() & values.notna()


def _to_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype("float64"), None
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    return parsed, parsed.isna() & values.notna()


_ACCEPTS: dict[str, Callable[[object], bool]] = {
    "text": _is_textual,
    "timestamp": lambda d: _is_text(d) or pd.api.types.is_datetime64_any_dtype(d),
    "number": lambda d: (
        _is_text(d) or (pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d))
    ),
}
_CONVERTERS = {"text": _to_text, "timestamp": _to_timestamps, "number": _to_numbers}
_NULL_DTYPES = {"text": "str", "timestamp": UTC_INSTANT, "number": "float64"}
_UNCONVERTIBLE = {
    "timestamp": "timestamps that cannot be parsed (expected ISO 8601, e.g. 2026-01-31T08:00:00Z)",
    "number": "values that are not numbers",
}


def _convert_column(values: pd.Series, column: ColumnContract, findings: _Findings) -> pd.Series:
    """``values`` in the contract dtype; wrong types and unconvertible values become errors."""
    if column.name in findings.unusable or values.isna().all():
        return pd.Series(None, index=values.index, dtype=_NULL_DTYPES[column.kind])
    if not _ACCEPTS[column.kind](values.dtype):
        findings.error(column.name, f"has type {values.dtype}, expected {column.kind}", len(values))
        findings.unusable.add(column.name)
        return pd.Series(None, index=values.index, dtype=_NULL_DTYPES[column.kind])
    try:
        converted, unconvertible = _CONVERTERS[column.kind](values)
    except (TypeError, ValueError) as error:
        findings.error(column.name, f"cannot be converted to {column.kind}: {error}", len(values))
        findings.unusable.add(column.name)
        return pd.Series(None, index=values.index, dtype=_NULL_DTYPES[column.kind])
    if unconvertible is not None and unconvertible.any():
        count = int(unconvertible.sum())
        message = f"{_rows_have(count)} {_UNCONVERTIBLE[column.kind]}"
        findings.error(column.name, message, count, _examples(values, unconvertible))
    return converted


# --- value checks --------------------------------------------------------------------------------


def _check_nulls(values: pd.Series, column: ColumnContract, findings: _Findings) -> None:
    """Nulls in a required column (on the values as read, before any conversion)."""
    nulls = values.isna()
    count = int(nulls.sum())
    if count:
        findings.error(column.name, f"{_rows_have(count)} a null {column.name}", count)


def _check_empty_ids(values: pd.Series, findings: _Findings) -> None:
    blank = values.str.strip() == ""
    count = int(blank.sum())
    if count:
        findings.error("customer_id", f"{_rows_have(count)} an empty customer_id", count)


def _check_allowed(values: pd.Series, column: ColumnContract, findings: _Findings) -> None:
    counts = values.value_counts()
    unknown = counts[~counts.index.isin(column.allowed)]
    if not unknown.empty:
        rows = int(unknown.sum())
        findings.error(
            column.name,
            f"{_rows_have(rows)} a {column.name} outside {', '.join(column.allowed)}",
            rows,
            _counted(unknown),
        )


def _check_numbers(values: pd.Series, column: ColumnContract, findings: _Findings) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        count = int(infinite.sum())
        findings.error(column.name, f"{_rows_have(count)} an infinite {column.name}", count)
    negative = values < 0
    if column.non_negative and negative.any():
        count = int(negative.sum())
        message = f"{_rows_have(count)} a negative {column.name} (min {values.min():g})"
        findings.error(column.name, message, count, _examples(values, negative))


def _check_future(
    values: pd.Series, column: ColumnContract, limit: pd.Timestamp, findings: _Findings
) -> None:
    future = values > limit
    if future.any():
        count = int(future.sum())
        message = (
            f"{_rows_have(count)} {column.name} in the future (max {values.max()}, now is {limit})"
        )
        findings.error(column.name, message, count, _examples(values, future))


def _check_past(values: pd.Series, column: ColumnContract, findings: _Findings) -> None:
    early = values < EARLIEST_INSTANT
    if early.any():
        count = int(early.sum())
        message = (
            f"{_rows_have(count)} {column.name} before {EARLIEST_INSTANT.date()} (min "
            f"{values.min()}): not a date of a course log"
        )
        findings.error(column.name, message, count, _examples(values, early))


def _check_unique(values: pd.Series, column: ColumnContract, findings: _Findings) -> None:
    repeated = values.duplicated(keep=False) & values.notna()
    if repeated.any():
        rows = int(repeated.sum())
        distinct = values[repeated].nunique()
        message = f"{_rows_have(rows)} a repeated {column.name} ({_plural(distinct, 'value')})"
        findings.error(column.name, message, rows, _examples(values, repeated))


def _check_values(
    frame: pd.DataFrame,
    contract: tuple[ColumnContract, ...],
    findings: _Findings,
    as_of_limit: pd.Timestamp | None,
) -> None:
    """The per-column checks of the contract, on converted values (nulls are never offending)."""
    for column in contract:
        if column.name in findings.unusable:
            continue
        values = frame[column.name]
        if column.name == "customer_id":
            _check_empty_ids(values, findings)
        if column.allowed is not None:
            _check_allowed(values, column, findings)
        if column.kind == "number":
            _check_numbers(values, column, findings)
        if column.kind == "timestamp":
            _check_past(values, column, findings)
        if column.kind == "timestamp" and as_of_limit is not None:
            _check_future(values, column, as_of_limit, findings)
        if column.unique:
            _check_unique(values, column, findings)


def _contract_frame(
    raw: pd.DataFrame,
    contract: tuple[ColumnContract, ...],
    findings: _Findings,
    as_of_limit: pd.Timestamp | None,
) -> pd.DataFrame:
    """Columns conformed, nulls checked, values converted and checked: the contract form."""
    conformed = _conform_columns(raw, contract, findings)
    for column in contract:
        if not column.nullable and column.name not in findings.unusable:
            _check_nulls(conformed[column.name], column, findings)
    converted = pd.DataFrame(
        {c.name: _convert_column(conformed[c.name], c, findings) for c in contract},
        index=conformed.index,
    )
    _check_values(converted, contract, findings, as_of_limit)
    return converted


# --- events only: duplicates and event types -----------------------------------------------------


def _hashable_codes(values: pd.Series) -> pd.Series | np.ndarray:
    """Text as factorised integer codes (nulls share code -1); other columns as they are."""
    if _is_text(values.dtype) or isinstance(values.dtype, pd.CategoricalDtype):
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


def _drop_exact_duplicates(frame: pd.DataFrame, findings: _Findings) -> tuple[pd.DataFrame, int]:
    duplicated = exact_duplicates(frame, narrow_by=("customer_id", "ts"))
    dropped = int(duplicated.sum())
    if not dropped:
        return frame, 0
    findings.note(None, f"{_plural(dropped, 'exact duplicate row')} dropped", dropped)
    return frame[~duplicated].reset_index(drop=True), dropped


def _translate_event_types(
    frame: pd.DataFrame, mapping: EventMapping | None, allow_unknown: bool, findings: _Findings
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
            message = f"{_rows_have(rows)} event types {where}: loaded as 'other'"
            findings.note("event_type", message, rows, _counted(unmapped))
        else:
            message = (
                f"{_rows_have(rows)} event types {where} ({_plural(len(unmapped), 'type')}); "
                "map them in a "
                "mapping file, or allow unknown types to load them as 'other'"
            )
            findings.error("event_type", message, rows, _counted(unmapped))
    return frame.assign(event_type=mapped.values)


# --- the final schema check ----------------------------------------------------------------------


_COLUMN_SET_CHECKS = {
    "column_in_dataframe": "is missing",
    "column_in_schema": "is not part of the contract",
}


def _describe_failure(column: str, check: str, cases: pd.DataFrame) -> str:
    """The message for one group of pandera failure cases of a column."""
    rows = len(cases)
    if check == "not_nullable":
        return f"{_rows_have(rows)} a null {column}"
    if check.startswith("dtype("):  # per value: pandera could not read these as the dtype
        expected = check.removeprefix("dtype(").removesuffix(")").strip("'")
        return f"{_rows_have(rows)} {column} values that are not {expected}"
    if check.startswith("isin("):
        return f"{_rows_have(rows)} {column} outside {check.removeprefix('isin(')[:-1]}"
    # Our own checks carry a readable error ("is infinite"); pandera's built-ins a call signature.
    verb = "that" if check.startswith("is ") else "failing"
    return f"{_rows_have(rows)} {column} {verb} {check}"


def _frame_level_problems(cases: pd.DataFrame, check: str, source: str) -> list[Problem]:
    """Missing/unexpected columns (one problem each), column order, repeated keys (one each)."""
    if check in _COLUMN_SET_CHECKS:
        message = _COLUMN_SET_CHECKS[check]
        return [Problem(source, str(name), message, 0) for name in cases["failure_case"]]
    if check == "column_ordered":
        misplaced = ", ".join(str(name) for name in cases["failure_case"][:EXAMPLES_SHOWN])
        return [Problem(source, None, f"columns out of the contract's order: {misplaced}", 0)]
    key = ", ".join(dict.fromkeys(str(c) for c in cases["column"]))
    rows = int(cases["index"].nunique())
    return [Problem(source, key, f"{_rows_have(rows)} a repeated ({key})", rows)]


def _column_problem(column: str, check: str, cases: pd.DataFrame, source: str) -> Problem:
    """One problem for the failure cases of one check on one column."""
    if check.startswith("dtype(") and cases["index"].isna().all():  # the column's dtype as a whole
        expected = check.removeprefix("dtype(").removesuffix(")").strip("'")
        found = cases["failure_case"].iloc[0]
        return Problem(source, column, f"has type {found}, expected {expected}", 0)
    shown = cases["failure_case"].dropna().drop_duplicates()[:EXAMPLES_SHOWN]
    examples = tuple(_format_value(value) for value in shown)
    return Problem(source, column, _describe_failure(column, check, cases), len(cases), examples)


def schema_problems(errors: pa.errors.SchemaErrors, source: str) -> list[Problem]:
    """Turn pandera's failure cases into friendly Problems: one per column and check.

    A missing or unexpected column is a problem of its own; a repeated multi-column key is one
    problem naming all its columns; a frame-wide check without a column is named ``(frame)``.
    """
    cases = errors.failure_cases
    checks = cases["check"].astype(str)
    frame_level = checks.isin([*_COLUMN_SET_CHECKS, "column_ordered", "multiple_fields_uniqueness"])
    problems = []
    for check, group in cases[frame_level].groupby(checks[frame_level], sort=False):
        problems += _frame_level_problems(group, str(check), source)
    column_level = cases[~frame_level].assign(column=cases["column"].fillna("(frame)"))
    for (column, check), group in column_level.groupby(["column", "check"], sort=False):
        problems.append(_column_problem(str(column), str(check), group, source))
    return problems


def validate_frame(
    frame: pd.DataFrame, schema: pa.DataFrameSchema, *, source: str
) -> tuple[pd.DataFrame, list[Problem]]:
    """Validate ``frame`` with a pandera ``schema`` (lazily: every failure at once).

    Returns:
        The coerced frame and no problems, or the frame unchanged and the failures as Problems.
    """
    try:
        return schema.validate(frame, lazy=True), []
    except pa.errors.SchemaErrors as errors:
        return frame, schema_problems(errors, source)


def _final_check(
    frame: pd.DataFrame, schema: pa.DataFrameSchema, findings: _Findings
) -> pd.DataFrame:
    """The pandera contract, as a last guard, once the friendly checks found no error."""
    if findings.has_errors:
        return frame
    validated, problems = validate_frame(frame, schema, source=findings.source)
    findings.problems.extend(problems)
    return validated


# --- public loaders ------------------------------------------------------------------------------


def _empty(contract: tuple[ColumnContract, ...]) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=_NULL_DTYPES[c.kind]) for c in contract})


def _load_events(
    path_or_frame: TableInput,
    mapping: EventMapping | None,
    allow_unknown: bool,
    as_of_limit: pd.Timestamp | None,
) -> _Loaded:
    findings = _Findings(_source_name(path_or_frame, "events"))
    raw = _read_table(path_or_frame, findings)
    if raw is None:
        findings.unusable.update(c.name for c in EVENT_CONTRACT)
        return _Loaded(_empty(EVENT_CONTRACT), findings, rows=0)
    renamed = _apply_column_mapping(raw, mapping, findings)
    frame = _contract_frame(renamed, EVENT_CONTRACT, findings, as_of_limit)
    # Duplicates are judged before type mapping: two distinct foreign types that both become
    # "other" are still two events.
    frame, dropped = _drop_exact_duplicates(frame, findings)
    frame = _translate_event_types(frame, mapping, allow_unknown, findings)
    frame = _final_check(frame, events_schema(allow_other=allow_unknown), findings)
    return _Loaded(frame, findings, rows=len(raw), duplicates_dropped=dropped)


def _load_customers(path_or_frame: TableInput, as_of_limit: pd.Timestamp | None) -> _Loaded:
    findings = _Findings(_source_name(path_or_frame, "customers"))
    raw = _read_table(path_or_frame, findings)
    if raw is None:
        findings.unusable.update(c.name for c in CUSTOMER_CONTRACT)
        return _Loaded(_empty(CUSTOMER_CONTRACT), findings, rows=0)
    frame = _contract_frame(raw, CUSTOMER_CONTRACT, findings, as_of_limit)
    frame = _final_check(frame, customers_schema(), findings)
    return _Loaded(frame, findings, rows=len(raw))


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
    findings: _Findings,
) -> None:
    """Events whose id is not a customer, judged once per distinct id (``positions`` < 0)."""
    # Blank ids are an error of their own already (and null ids have no code): not "unknown".
    unknown_ids = (positions < 0) & (distinct_ids.str.strip() != "")
    if not unknown_ids.any():
        return
    rows = int(np.append(unknown_ids, False)[codes].sum())  # code -1 (null id) -> False
    message = (
        f"{_rows_have(rows)} a customer_id not in {customers_source} "
        f"({_plural(int(unknown_ids.sum()), 'distinct id')})"
    )
    examples = [_format_value(v) for v in distinct_ids[unknown_ids][:EXAMPLES_SHOWN]]
    findings.error("customer_id", message, rows, examples)


def _check_before_enrolment(
    events: pd.DataFrame, positions: np.ndarray, lookup: pd.DataFrame, findings: _Findings
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
        f"{_rows_have(rows)} ts before their customer's enrolled_at "
        f"({_plural(customers, 'customer')})"
    )
    findings.error("ts", message, rows, examples)


def _cross_check(events: _Loaded, customers: _Loaded) -> list[Problem]:
    """Events of unknown customers and events before enrolment (errors on the events source)."""
    findings = _Findings(events.findings.source)
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
    "InputError",
    "Problem",
    "ValidatedInputs",
    "ValidationReport",
    "exact_duplicates",
    "load_customers",
    "load_events",
    "load_valid_inputs",
    "schema_problems",
    "utc_instant",
    "valid_customers",
    "validate_frame",
    "validate_inputs",
]
