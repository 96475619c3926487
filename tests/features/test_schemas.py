"""Tests for features/schemas.py: the pandera contracts of events, customers, labels, features."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from features.catalog import load_catalog
from features.schemas import (
    AS_OF_DTYPE,
    UTC_INSTANT,
    CustomersSchema,
    EventsSchema,
    LabelsSchema,
    events_schema,
    feature_frame_schema,
)

# --- builders -------------------------------------------------------------------------------------


def events_frame(**overrides: list) -> pd.DataFrame:
    columns = {
        "customer_id": ["C1", "C2"],
        "ts": pd.to_datetime(["2026-01-05T09:00:00Z", "2026-01-06T10:00:00Z"]),
        "event_type": ["session", "lesson_completed"],
        "duration_s": [600.0, None],
        "channel": ["web", None],
        "item": [None, "L001"],
    }
    return pd.DataFrame({**columns, **overrides})


def customers_frame(**overrides: list) -> pd.DataFrame:
    columns = {
        "customer_id": ["C1", "C2"],
        "product_tag": ["PT_001", "PT_003"],
        "enrolled_at": pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]),
        "mrr": [49.0, None],
    }
    return pd.DataFrame({**columns, **overrides})


def labels_frame(**overrides: list) -> pd.DataFrame:
    columns = {
        "customer_id": ["C1", "C2"],
        "as_of": [date(2026, 2, 1), date(2026, 2, 1)],
        "churned": [0, 1],
    }
    return pd.DataFrame({**columns, **overrides})


_SAMPLE_VALUES = {"float": [1.5, np.nan], "int": [3, 0], "bool": [True, False]}


def feature_frame() -> pd.DataFrame:
    """Two rows with every catalog column, each in the dtype the catalog gives it."""
    columns: dict[str, object] = {
        "customer_id": ["C1", "C2"],
        "as_of": np.array(["2026-02-01", "2026-02-01"], dtype="datetime64[us]"),
    }
    for spec in load_catalog().features:
        columns[spec.name] = _SAMPLE_VALUES.get(spec.dtype, ["PT_001", "PT_002"])
    return pd.DataFrame(columns)


def first_feature(dtype: str, *, needs: bool | None = None) -> str:
    for spec in load_catalog().features:
        if spec.dtype == dtype and (needs is None or bool(spec.needs) == needs):
            return spec.name
    raise AssertionError(f"the catalog has no {dtype} feature (needs={needs})")


def failed_checks(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> set[tuple[str, str]]:
    """(column, check) pairs pandera reports for ``frame``."""
    with pytest.raises(pa.errors.SchemaErrors) as caught:
        schema.validate(frame, lazy=True)
    cases = caught.value.failure_cases
    return {(str(c), str(k)) for c, k in zip(cases["column"], cases["check"], strict=True)}


# --- events ---------------------------------------------------------------------------------------


def test_events_schema_accepts_contract_frame_and_coerces_times_to_utc_microseconds():
    # given events with naive and Paris-time timestamps in nanoseconds
    paris = pd.to_datetime(["2026-01-05 10:00", "2026-01-06 11:00"]).tz_localize("Europe/Paris")
    frame = events_frame(ts=paris.as_unit("ns"))
    naive = events_frame(ts=pd.to_datetime(["2026-01-05 09:00", "2026-01-06 10:00"]))
    # when validated
    validated, validated_naive = EventsSchema.validate(frame), EventsSchema.validate(naive)
    # then both are UTC microseconds, the Paris times converted and the naive ones read as UTC
    assert validated["ts"].dtype == UTC_INSTANT
    assert validated["ts"].tolist() == validated_naive["ts"].tolist()
    assert validated["ts"].iloc[0] == pd.Timestamp("2026-01-05T09:00:00Z")


def test_events_schema_allows_other_but_the_strict_variant_does_not():
    # given an event of type "other" (where allow_unknown puts unmapped types)
    frame = events_frame(event_type=["session", "other"])
    # when validated by both schema variants
    EventsSchema.validate(frame)
    failures = failed_checks(events_schema(allow_other=False), frame)
    # then only the strict one rejects it
    assert {column for column, _ in failures} == {"event_type"}


@pytest.mark.parametrize(
    ("override", "column"),
    [
        ({"event_type": ["session", "login"]}, "event_type"),
        ({"duration_s": [-1.0, None]}, "duration_s"),
        ({"duration_s": [np.inf, None]}, "duration_s"),
        ({"channel": ["web", "tv"]}, "channel"),
        ({"customer_id": ["C1", None]}, "customer_id"),
        ({"customer_id": ["C1", ""]}, "customer_id"),
        ({"ts": [pd.Timestamp("2026-01-05T09:00Z"), pd.NaT]}, "ts"),
    ],
)
def test_events_schema_rejects_values_outside_the_contract(override, column):
    # given events with one bad value
    frame = events_frame(**override)
    # when validated, then the failure is on that column
    assert {c for c, _ in failed_checks(EventsSchema, frame)} == {column}


def test_events_schema_is_strict_about_columns():
    # given events with an extra column and without item
    frame = events_frame().drop(columns="item").assign(extra=1)
    # when validated, then both the extra and the missing column fail
    checks = {check for _, check in failed_checks(EventsSchema, frame)}
    assert {"column_in_schema", "column_in_dataframe"} <= checks


# --- customers ------------------------------------------------------------------------------------


def test_customers_schema_accepts_contract_frame():
    # given a valid customers frame with a null mrr
    frame = customers_frame()
    # when validated
    validated = CustomersSchema.validate(frame)
    # then the enrolment times are UTC microseconds and the null mrr survives
    assert validated["enrolled_at"].dtype == UTC_INSTANT
    assert validated["mrr"].isna().tolist() == [False, True]


@pytest.mark.parametrize(
    ("override", "column"),
    [
        ({"customer_id": ["C1", "C1"]}, "customer_id"),
        ({"product_tag": ["PT_001", "PT_009"]}, "product_tag"),
        ({"mrr": [-5.0, None]}, "mrr"),
        ({"enrolled_at": [pd.Timestamp("2026-01-01T00:00Z"), pd.NaT]}, "enrolled_at"),
    ],
)
def test_customers_schema_rejects_values_outside_the_contract(override, column):
    # given customers with one bad value
    frame = customers_frame(**override)
    # when validated, then the failure is on that column
    assert {c for c, _ in failed_checks(CustomersSchema, frame)} == {column}


# --- labels ---------------------------------------------------------------------------------------


def test_labels_schema_turns_dates_into_naive_midnight_microseconds_and_churned_into_int8():
    # given labels with python dates and int64 0/1
    frame = labels_frame()
    # when validated
    validated = LabelsSchema.validate(frame)
    # then as_of is naive datetime64[us] at midnight and churned int8
    assert validated["as_of"].dtype == AS_OF_DTYPE
    assert validated["as_of"].iloc[0] == pd.Timestamp("2026-02-01")
    assert validated["churned"].dtype == np.int8
    assert validated["churned"].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("override", "column"),
    [
        ({"as_of": pd.to_datetime(["2026-02-01T00:00", "2026-02-01T06:00"])}, "as_of"),
        ({"churned": [0, 2]}, "churned"),
        ({"churned": [0.0, 0.5]}, "churned"),  # never truncated to 0
        ({"customer_id": ["C1", None]}, "customer_id"),
    ],
)
def test_labels_schema_rejects_bad_values(override, column):
    # given labels with one bad value
    frame = labels_frame(**override)
    # when validated, then the failure is on that column
    assert {c for c, _ in failed_checks(LabelsSchema, frame)} == {column}


def test_labels_schema_rejects_a_repeated_customer_and_day():
    # given the same (customer_id, as_of) twice
    frame = labels_frame(customer_id=["C1", "C1"])
    # when validated, then the uniqueness check fails
    checks = {check for _, check in failed_checks(LabelsSchema, frame)}
    assert "multiple_fields_uniqueness" in checks


# --- the feature frame ----------------------------------------------------------------------------


def test_feature_frame_schema_lists_the_keys_then_the_catalog_in_order():
    # given the catalog
    catalog = load_catalog()
    # when the schema is built from it
    schema = feature_frame_schema()
    # then its columns are the keys and then every catalog feature, in catalog order
    assert list(schema.columns) == ["customer_id", "as_of", *catalog.names]
    assert schema.strict and schema.ordered


def test_feature_frame_schema_accepts_a_correct_frame():
    # given a frame with every catalog column in its dtype
    frame = feature_frame()
    # when validated
    validated = feature_frame_schema().validate(frame)
    # then dtypes follow the catalog: ints needing event types become nullable Int64
    assert validated[first_feature("int", needs=True)].dtype == "Int64"
    assert validated[first_feature("int", needs=False)].dtype == np.int64
    assert validated[first_feature("bool")].dtype == bool
    assert validated["as_of"].dtype == AS_OF_DTYPE
    assert len(validated) == 2


def test_feature_frame_schema_accepts_null_counts_when_needed_types_are_absent():
    # given a count feature that needs event types, null for one learner (as float NaN)
    name = first_feature("int", needs=True)
    frame = feature_frame().assign(**{name: [2.0, np.nan]})
    # when validated
    validated = feature_frame_schema().validate(frame)
    # then it is a nullable integer column with the null kept
    assert validated[name].isna().tolist() == [False, True]
    assert validated[name].iloc[0] == 2


def test_feature_frame_schema_rejects_a_missing_feature_column():
    # given a frame without one catalog feature
    name = first_feature("float")
    frame = feature_frame().drop(columns=name)
    # when validated, then the column is reported missing
    failures = failed_checks(feature_frame_schema(), frame)
    assert any(check == "column_in_dataframe" for _, check in failures)


@pytest.mark.parametrize(
    ("dtype", "bad_values"),
    [
        ("float", ["high", "low"]),
        ("int", [1.5, 2.0]),  # not truncated to 1
        ("int", ["3", "4"]),
        ("bool", ["yes", "no"]),  # text is never read as True
        ("category", ["PT_001", "PT_999"]),
        ("float", [np.inf, 1.0]),
    ],
)
def test_feature_frame_schema_rejects_a_mistyped_feature_column(dtype, bad_values):
    # given a frame where one feature holds values of the wrong type
    name = first_feature(dtype)
    frame = feature_frame().assign(**{name: bad_values})
    # when validated, then that column fails
    assert name in {column for column, _ in failed_checks(feature_frame_schema(), frame)}


def test_feature_frame_schema_rejects_repeated_keys_and_non_midnight_as_of():
    # given two rows for the same learner and day, one as_of at 06:00
    frame = feature_frame().assign(customer_id=["C1", "C1"])
    frame["as_of"] = np.array(["2026-02-01T00:00", "2026-02-01T06:00"], dtype="datetime64[us]")
    duplicated = feature_frame().assign(customer_id=["C1", "C1"])
    # when validated
    failures = failed_checks(feature_frame_schema(), frame)
    duplicate_failures = failed_checks(feature_frame_schema(), duplicated)
    # then the midnight check and the key uniqueness fail
    assert ("as_of", "is not at 00:00") in failures
    assert any(check == "multiple_fields_uniqueness" for _, check in duplicate_failures)
