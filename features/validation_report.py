"""What validating the inputs found: problems, the report a user reads, and its wording."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

EXAMPLES_SHOWN = 3
"""How many offending values a problem quotes."""
TYPES_LISTED = 10
"""How many unknown event types / tags a problem lists (with their counts)."""

Severity = Literal["error", "note"]


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
            f"input validation {status}: {plural(len(self.errors), 'error')}, "
            f"{plural(len(self.notes), 'note')}",
            f"{self.events_source}: {plural(self.events_rows, 'row')} read, "
            f"{plural(self.duplicates_dropped, 'exact duplicate')} dropped",
            f"{self.customers_source}: {plural(self.customers_rows, 'row')} read",
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
class Findings:
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
class Loaded:
    frame: pd.DataFrame
    findings: Findings
    rows: int
    duplicates_dropped: int = 0


# --- formatting helpers --------------------------------------------------------------------------


def rows_have(count: int) -> str:
    return "1 row has" if count == 1 else f"{count:,} rows have"


def plural(count: int, noun: str) -> str:
    """``1 error``, ``2 errors``, ``1,000 rows``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def format_value(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def examples_of(values: pd.Series, mask: pd.Series | np.ndarray) -> tuple[str, ...]:
    """The first few distinct offending values (looks at the first 1000 offending rows only)."""
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))[:1000]
    sample = values.iloc[positions].drop_duplicates().head(EXAMPLES_SHOWN)
    return tuple(format_value(value) for value in sample)


def counted(counts: pd.Series) -> tuple[str, ...]:
    """``'login' (3 rows)`` for the most frequent values of a value_counts result."""
    shown = counts.head(TYPES_LISTED)
    listed = [f"{format_value(v)} ({n:,} {'row' if n == 1 else 'rows'})" for v, n in shown.items()]
    if len(counts) > TYPES_LISTED:
        listed.append(f"and {len(counts) - TYPES_LISTED} more")
    return tuple(listed)


def utc_instant(value: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """A point in time as a UTC ``Timestamp`` (naive values are read as UTC)."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.as_unit("us")


__all__ = [
    "Findings",
    "InputError",
    "Loaded",
    "Problem",
    "ValidatedInputs",
    "ValidationReport",
    "counted",
    "examples_of",
    "format_value",
    "plural",
    "rows_have",
    "utc_instant",
]
