"""The final check of a frame against its pandera schema, with the failures worded as problems."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from features.validation_report import EXAMPLES_SHOWN, Findings, Problem, format_value, rows_have

# --- the final schema check ----------------------------------------------------------------------


_COLUMN_SET_CHECKS = {
    "column_in_dataframe": "is missing",
    "column_in_schema": "is not part of the contract",
}


def _describe_failure(column: str, check: str, cases: pd.DataFrame) -> str:
    """The message for one group of pandera failure cases of a column."""
    rows = len(cases)
    if check == "not_nullable":
        return f"{rows_have(rows)} a null {column}"
    if check.startswith("dtype("):  # per value: pandera could not read these as the dtype
        expected = check.removeprefix("dtype(").removesuffix(")").strip("'")
        return f"{rows_have(rows)} {column} values that are not {expected}"
    if check.startswith("isin("):
        return f"{rows_have(rows)} {column} outside {check.removeprefix('isin(')[:-1]}"
    # Our own checks carry a readable error ("is infinite"); pandera's built-ins a call signature.
    verb = "that" if check.startswith("is ") else "failing"
    return f"{rows_have(rows)} {column} {verb} {check}"


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
    return [Problem(source, key, f"{rows_have(rows)} a repeated ({key})", rows)]


def _column_problem(column: str, check: str, cases: pd.DataFrame, source: str) -> Problem:
    """One problem for the failure cases of one check on one column."""
    if check.startswith("dtype(") and cases["index"].isna().all():  # the column's dtype as a whole
        expected = check.removeprefix("dtype(").removesuffix(")").strip("'")
        found = cases["failure_case"].iloc[0]
        return Problem(source, column, f"has type {found}, expected {expected}", 0)
    shown = cases["failure_case"].dropna().drop_duplicates()[:EXAMPLES_SHOWN]
    examples = tuple(format_value(value) for value in shown)
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


def final_check(
    frame: pd.DataFrame, schema: pa.DataFrameSchema, findings: Findings
) -> pd.DataFrame:
    """The pandera contract, as a last guard, once the friendly checks found no error."""
    if findings.has_errors:
        return frame
    validated, problems = validate_frame(frame, schema, source=findings.source)
    findings.problems.extend(problems)
    return validated


__all__ = [
    "schema_problems",
    "validate_frame",
]
