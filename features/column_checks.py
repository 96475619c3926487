"""One table's columns against its contract: renames, missing and extra columns, conversion to the
contract's dtypes and the value checks, every finding worded as a problem."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from features.mapping import EventMapping
from features.schemas import (
    EARLIEST_INSTANT,
    UTC_INSTANT,
    ColumnContract,
)
from features.validation_report import (
    Findings,
    counted,
    examples_of,
    plural,
    rows_have,
)

# --- columns: mapping renames, missing, extra -----------------------------------------------------


def apply_column_mapping(
    frame: pd.DataFrame, mapping: EventMapping | None, findings: Findings
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
    frame: pd.DataFrame, contract: tuple[ColumnContract, ...], findings: Findings
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
    column: ColumnContract, found: list[str], rows: int, findings: Findings
) -> None:
    if column.nullable:
        findings.note(column.name, "is absent: filled with nulls", rows)
        return
    findings.error(column.name, f"is missing (found columns: {', '.join(found) or 'none'})", rows)
    findings.unusable.add(column.name)


# --- conversion to the contract dtypes -----------------------------------------------------------


def is_text(dtype: object) -> bool:
    return dtype == np.dtype(object) or pd.api.types.is_string_dtype(dtype)


def _is_textual(dtype: object) -> bool:
    """Text already, or convertible to it without losing anything (categories, integer ids)."""
    return (
        is_text(dtype)
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
    "timestamp": lambda d: is_text(d) or pd.api.types.is_datetime64_any_dtype(d),
    "number": lambda d: (
        is_text(d) or (pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d))
    ),
}
_CONVERTERS = {"text": _to_text, "timestamp": _to_timestamps, "number": _to_numbers}
NULL_DTYPES = {"text": "str", "timestamp": UTC_INSTANT, "number": "float64"}
_UNCONVERTIBLE = {
    "timestamp": "timestamps that cannot be parsed (expected ISO 8601, e.g. 2026-01-31T08:00:00Z)",
    "number": "values that are not numbers",
}


def _convert_column(values: pd.Series, column: ColumnContract, findings: Findings) -> pd.Series:
    """``values`` in the contract dtype; wrong types and unconvertible values become errors."""
    if column.name in findings.unusable or values.isna().all():
        return pd.Series(None, index=values.index, dtype=NULL_DTYPES[column.kind])
    if not _ACCEPTS[column.kind](values.dtype):
        findings.error(column.name, f"has type {values.dtype}, expected {column.kind}", len(values))
        findings.unusable.add(column.name)
        return pd.Series(None, index=values.index, dtype=NULL_DTYPES[column.kind])
    try:
        converted, unconvertible = _CONVERTERS[column.kind](values)
    except (TypeError, ValueError) as error:
        findings.error(column.name, f"cannot be converted to {column.kind}: {error}", len(values))
        findings.unusable.add(column.name)
        return pd.Series(None, index=values.index, dtype=NULL_DTYPES[column.kind])
    if unconvertible is not None and unconvertible.any():
        count = int(unconvertible.sum())
        message = f"{rows_have(count)} {_UNCONVERTIBLE[column.kind]}"
        findings.error(column.name, message, count, examples_of(values, unconvertible))
    return converted


# --- value checks --------------------------------------------------------------------------------


def _check_nulls(values: pd.Series, column: ColumnContract, findings: Findings) -> None:
    """Nulls in a required column (on the values as read, before any conversion)."""
    nulls = values.isna()
    count = int(nulls.sum())
    if count:
        findings.error(column.name, f"{rows_have(count)} a null {column.name}", count)


def _check_empty_ids(values: pd.Series, findings: Findings) -> None:
    blank = values.str.strip() == ""
    count = int(blank.sum())
    if count:
        findings.error("customer_id", f"{rows_have(count)} an empty customer_id", count)


def _check_allowed(values: pd.Series, column: ColumnContract, findings: Findings) -> None:
    counts = values.value_counts()
    unknown = counts[~counts.index.isin(column.allowed)]
    if not unknown.empty:
        rows = int(unknown.sum())
        findings.error(
            column.name,
            f"{rows_have(rows)} a {column.name} outside {', '.join(column.allowed)}",
            rows,
            counted(unknown),
        )


def _check_numbers(values: pd.Series, column: ColumnContract, findings: Findings) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        count = int(infinite.sum())
        findings.error(column.name, f"{rows_have(count)} an infinite {column.name}", count)
    negative = values < 0
    if column.non_negative and negative.any():
        count = int(negative.sum())
        message = f"{rows_have(count)} a negative {column.name} (min {values.min():g})"
        findings.error(column.name, message, count, examples_of(values, negative))


def _check_future(
    values: pd.Series, column: ColumnContract, limit: pd.Timestamp, findings: Findings
) -> None:
    future = values > limit
    if future.any():
        count = int(future.sum())
        message = (
            f"{rows_have(count)} {column.name} in the future (max {values.max()}, now is {limit})"
        )
        findings.error(column.name, message, count, examples_of(values, future))


def _check_past(values: pd.Series, column: ColumnContract, findings: Findings) -> None:
    early = values < EARLIEST_INSTANT
    if early.any():
        count = int(early.sum())
        message = (
            f"{rows_have(count)} {column.name} before {EARLIEST_INSTANT.date()} (min "
            f"{values.min()}): not a date of a course log"
        )
        findings.error(column.name, message, count, examples_of(values, early))


def _check_unique(values: pd.Series, column: ColumnContract, findings: Findings) -> None:
    repeated = values.duplicated(keep=False) & values.notna()
    if repeated.any():
        rows = int(repeated.sum())
        distinct = values[repeated].nunique()
        message = f"{rows_have(rows)} a repeated {column.name} ({plural(distinct, 'value')})"
        findings.error(column.name, message, rows, examples_of(values, repeated))


def _check_values(
    frame: pd.DataFrame,
    contract: tuple[ColumnContract, ...],
    findings: Findings,
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


def contract_frame(
    raw: pd.DataFrame,
    contract: tuple[ColumnContract, ...],
    findings: Findings,
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


__all__ = [
    "NULL_DTYPES",
    "apply_column_mapping",
    "contract_frame",
    "is_text",
]
