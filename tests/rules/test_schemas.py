"""Tests for rules/schemas.py's ``unique_ids``: pandera's ``unique=True``, by sorted byte keys."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from rules.schemas import unique_ids


def _schema(check: pa.Check | None) -> pa.DataFrameSchema:
    column = pa.Column(str, check) if check is not None else pa.Column(str, unique=True)
    return pa.DataFrameSchema({"customer_id": column}, name="ids")


def _failures(schema: pa.DataFrameSchema, ids: list[str]) -> pd.DataFrame | None:
    try:
        schema.validate(pd.DataFrame({"customer_id": pd.Series(ids, dtype="str")}), lazy=True)
    except pa.errors.SchemaErrors as error:
        return error.failure_cases
    return None


@pytest.mark.parametrize(
    "ids",
    [
        ["C002", "C001", "C003"],
        ["C002", "C001", "C002", "C003", "C001"],
        ["a", "bb", "a"],  # several widths: pandas finds the repeats
        ["a", "bb", "ccc"],
    ],
    ids=["distinct", "repeats", "widths-repeat", "widths-distinct"],
)
def test_unique_ids_fails_the_rows_pandera_unique_fails_under_its_name(ids):
    # given ids with or without repeats
    # when checked by unique_ids and by pandera's own unique=True
    ours, pandera_unique = _failures(_schema(unique_ids()), ids), _failures(_schema(None), ids)

    # then: both pass, or both fail the same rows under the check name field_uniqueness
    if pandera_unique is None:
        assert ours is None
        return
    assert ours is not None
    assert set(ours["check"]) == set(pandera_unique["check"]) == {"field_uniqueness"}
    assert sorted(ours["failure_case"]) == sorted(pandera_unique["failure_case"])


def test_unique_ids_of_one_width_are_not_hashed_by_pandas(monkeypatch):
    # given distinct ids of one width, and pandas' duplicated made to fail if it is asked
    def refuse(*args, **kwargs):
        raise AssertionError("pandas duplicated called for ids the byte keys could check")

    monkeypatch.setattr(pd.Series, "duplicated", refuse)

    # when / then: the ids pass on their sorted keys alone
    assert _failures(_schema(unique_ids()), [f"C{n:05d}" for n in range(1_000, 0, -1)]) is None
