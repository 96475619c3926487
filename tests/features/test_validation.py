"""Tests for features/validation.py: reading, every friendly check, duplicates, the report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.frame_checks import validate_frame
from features.mapping import EventMapping, MappingError
from features.schemas import (
    UTC_INSTANT,
    CustomersSchema,
    EventsSchema,
    LabelsSchema,
    feature_frame_schema,
)
from features.validation import (
    exact_duplicates,
    load_customers,
    load_events,
    load_valid_inputs,
    valid_customers,
    validate_inputs,
)
from features.validation_report import InputError, Problem, ValidationReport

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 3, 1, tzinfo=UTC)

# --- builders -------------------------------------------------------------------------------------


def events_frame(**overrides: list) -> pd.DataFrame:
    """Four valid events of two customers (C1, C2), as text, like a CSV would give."""
    columns = {
        "customer_id": ["C1", "C1", "C2", "C2"],
        "ts": [
            "2026-01-05T09:00:00Z",
            "2026-01-05T09:30:00Z",
            "2026-01-06T10:00:00Z",
            "2026-01-07T11:00:00Z",
        ],
        "event_type": ["session", "lesson_completed", "session", "quiz_passed"],
        "duration_s": [600.0, None, 300.0, None],
        "channel": ["web", "web", "mobile", None],
        "item": [None, "L001", None, "Q01"],
    }
    return pd.DataFrame({**columns, **overrides})


def customers_frame(**overrides: list) -> pd.DataFrame:
    columns = {
        "customer_id": ["C1", "C2"],
        "product_tag": ["PT_001", "PT_003"],
        "enrolled_at": ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
        "mrr": [49.0, 0.0],
    }
    return pd.DataFrame({**columns, **overrides})


def errors_of(problems: list[Problem] | tuple[Problem, ...]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def only_error(problems: list[Problem] | tuple[Problem, ...]) -> Problem:
    errors = errors_of(problems)
    assert len(errors) == 1, [str(p) for p in errors]
    return errors[0]


def event_problem(**overrides: list) -> Problem:
    """The single error found in the base events with ``overrides``."""
    _, problems, _ = load_events(events_frame(**overrides), as_of_limit=NOW)
    return only_error(problems)


def customer_problem(**overrides: list) -> Problem:
    _, problems = load_customers(customers_frame(**overrides), as_of_limit=NOW)
    return only_error(problems)


def test_valid_customers_returns_a_clean_table_and_refuses_one_with_errors_naming_them():
    # given a clean customers table, and one with an unknown tier and a negative mrr
    clean = valid_customers(customers_frame(), as_of_limit=NOW)
    bad = customers_frame(product_tag=["PT_001", "PT_009"], mrr=[49.0, -1.0])
    # then the clean one comes back in contract form, the bad one is refused with both errors
    assert list(clean.columns[:4]) == ["customer_id", "product_tag", "enrolled_at", "mrr"]
    with pytest.raises(ValueError) as refused:
        valid_customers(bad, as_of_limit=NOW)
    assert "column product_tag" in str(refused.value) and "column mrr" in str(refused.value)
    assert "; " in str(refused.value)


# --- clean inputs ---------------------------------------------------------------------------------


def test_clean_inputs_pass_and_come_out_in_contract_form():
    # given valid events and customers
    # when validated
    result = validate_inputs(events_frame(), customers_frame(), now=NOW)
    # then the report passes and both frames satisfy the pandera contracts
    assert result.report.ok, result.report.render()
    assert result.report.problems == ()
    assert (result.report.events_rows, result.report.customers_rows) == (4, 2)
    EventsSchema.validate(result.events)
    CustomersSchema.validate(result.customers)
    assert result.events["ts"].dtype == UTC_INSTANT


def test_naive_timestamps_are_read_as_utc_and_aware_ones_converted():
    # given the same instant written naive, with Z, and with +01:00 and -05:00 offsets
    ts = [
        "2026-01-05 09:00:00",
        "2026-01-05T09:00:00Z",
        "2026-01-05T10:00:00+01:00",
        "2026-01-05T04:00:00-05:00",
    ]
    # when loaded
    events, problems, _ = load_events(events_frame(ts=ts))
    # then all four are 09:00 UTC
    assert problems == []
    assert set(events["ts"]) == {pd.Timestamp("2026-01-05T09:00:00Z")}


def test_datetime_columns_in_other_time_zones_are_converted_to_utc():
    # given a tz-aware datetime column in Paris time (09:00 UTC is 10:00 in Paris in winter)
    paris = pd.to_datetime(["2026-01-05 10:00"] * 4).tz_localize("Europe/Paris")
    # when loaded
    events, problems, _ = load_events(events_frame(ts=paris))
    # then the instants are in UTC, in microseconds
    assert not problems
    assert events["ts"].dtype == UTC_INSTANT
    assert events["ts"].iloc[0] == pd.Timestamp("2026-01-05T09:00:00Z")


# --- readers --------------------------------------------------------------------------------------


def test_csv_reader_keeps_leading_zeros_and_reads_only_empty_cells_as_null(tmp_path):
    # given a CSV with zero-padded ids, an empty duration and an item literally called "NA"
    path = tmp_path / "events.csv"
    events_frame(customer_id=["007"] * 4, item=["NA", None, None, None]).to_csv(path, index=False)
    # when loaded
    events, problems, _ = load_events(path)
    # then the id keeps its zeros, "NA" is a value, the empty cells are null
    assert not errors_of(problems)
    assert events["customer_id"].iloc[0] == "007"
    assert events["item"].iloc[0] == "NA"
    assert events["duration_s"].isna().tolist() == [False, True, False, True]


def test_parquet_and_csv_give_the_same_frame(tmp_path):
    # given the same events as parquet (typed) and as CSV (text)
    frame = events_frame()
    typed = frame.assign(ts=pd.to_datetime(frame["ts"]))
    typed.to_parquet(tmp_path / "events.parquet", index=False)
    frame.to_csv(tmp_path / "events.csv", index=False)
    # when both are loaded
    from_parquet, parquet_problems, _ = load_events(tmp_path / "events.parquet")
    from_csv, csv_problems, _ = load_events(tmp_path / "events.csv")
    # then they are identical
    assert parquet_problems == csv_problems == []
    pd.testing.assert_frame_equal(from_parquet, from_csv)


def test_compressed_csv_is_read_by_its_suffix(tmp_path):
    # given a gzip-compressed CSV
    path = tmp_path / "customers.csv.gz"
    customers_frame().to_csv(path, index=False)
    # when loaded
    customers, problems = load_customers(path)
    # then it is read like a plain CSV
    assert problems == []
    assert customers["customer_id"].tolist() == ["C1", "C2"]


def test_unsupported_suffix_is_an_error_naming_the_file(tmp_path):
    # given a JSON file
    path = tmp_path / "events.json"
    path.write_text("[]", encoding="utf-8")
    # when loaded
    _, problems, _ = load_events(path)
    # then the error names the file and says what is supported
    problem = only_error(problems)
    assert problem.source == "events.json"
    assert "unsupported file type (expected .parquet or .csv)" in str(problem)


def test_missing_file_is_an_error_naming_the_path(tmp_path):
    # given a path with nothing behind it
    path = tmp_path / "customers.parquet"
    # when loaded
    _, problems = load_customers(path)
    # then the error names it
    assert str(only_error(problems)).startswith("customers.parquet: file not found")


def test_unreadable_parquet_is_an_error_not_a_stack_trace(tmp_path):
    # given a file that only pretends to be parquet
    path = tmp_path / "events.parquet"
    path.write_text("customer_id,ts\n", encoding="utf-8")
    # when validated
    result = validate_inputs(path, customers_frame(), now=NOW)
    # then the report fails with a readable error about that file
    problem = only_error(result.report.problems)
    assert problem.source == "events.parquet"
    assert "cannot be read as parquet" in problem.message


def test_named_index_is_read_as_a_column():
    # given customers whose ids are the (named) index
    frame = customers_frame().set_index("customer_id")
    # when loaded
    customers, problems = load_customers(frame)
    # then the ids are found as the customer_id column
    assert problems == []
    assert customers["customer_id"].tolist() == ["C1", "C2"]


# --- column problems ------------------------------------------------------------------------------


def test_missing_required_column_is_an_error_naming_it_and_the_columns_found():
    # given events without ts
    frame = events_frame().drop(columns="ts")
    # when loaded
    _, problems, _ = load_events(frame, as_of_limit=NOW)
    # then one error names the column, every row, and the columns that are there
    problem = only_error(problems)
    assert (problem.column, problem.rows) == ("ts", 4)
    assert "is missing (found columns: customer_id, event_type" in problem.message


def test_missing_optional_column_is_filled_with_nulls_and_noted():
    # given events without duration_s (a foreign log may not have it)
    frame = events_frame().drop(columns="duration_s")
    # when validated
    result = validate_inputs(frame, customers_frame(), now=NOW)
    # then it passes, with a note, and the column is all null
    assert result.report.ok
    note = result.report.notes[0]
    assert (note.column, note.message) == ("duration_s", "is absent: filled with nulls")
    assert result.events["duration_s"].isna().all()


def test_extra_column_is_an_error():
    # given events with a column the contract does not have
    frame = events_frame().assign(ip_address="10.0.0.1")
    # when loaded
    _, problems, _ = load_events(frame)
    # then the error names it and says how to get rid of it
    problem = only_error(problems)
    assert (problem.column, problem.rows) == ("ip_address", 4)
    assert "is not part of the contract" in problem.message


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("duration_s", [True, False, True, False], "has type bool, expected number"),
        ("ts", [1, 2, 3, 4], "has type int64, expected timestamp"),
        ("customer_id", [1.5, 2.5, 3.5, 4.5], "has type float64, expected text"),
    ],
)
def test_wrong_column_type_is_an_error(column, values, expected):
    # given a column holding values of the wrong type
    # when loaded
    problem = event_problem(**{column: values})
    # then the error names the column, its type and the expected one
    assert (problem.column, problem.rows) == (column, 4)
    assert problem.message == expected


def test_integer_ids_are_accepted_as_text():
    # given numeric customer ids in both files
    events = events_frame(customer_id=[1, 1, 2, 2])
    customers = customers_frame(customer_id=[1, 2])
    # when validated
    result = validate_inputs(events, customers, now=NOW)
    # then they are text ids that match each other
    assert result.report.ok, result.report.render()
    assert result.events["customer_id"].tolist() == ["1", "1", "2", "2"]


def test_unconvertible_numbers_are_an_error_with_examples():
    # given durations that are not numbers
    problem = event_problem(duration_s=["600", "ten", None, "1,5"])
    # then the error counts and quotes them
    assert (problem.column, problem.rows) == ("duration_s", 2)
    assert str(problem).startswith("events: column duration_s: 2 rows have values that are not")
    assert problem.examples == ("'ten'", "'1,5'")


# --- value problems -------------------------------------------------------------------------------


def test_null_ids_are_an_error_with_count():
    problem = event_problem(customer_id=["C1", None, None, "C2"])
    assert (problem.column, problem.rows) == ("customer_id", 2)
    assert problem.message == "2 rows have a null customer_id"


def test_blank_ids_are_an_error_with_count():
    problem = event_problem(customer_id=["C1", "", "  ", "C2"])
    assert (problem.column, problem.rows) == ("customer_id", 2)
    assert problem.message == "2 rows have an empty customer_id"


def test_unparseable_timestamps_are_an_error_with_examples():
    problem = event_problem(ts=["2026-01-05T09:00:00Z", "05/01/2026", "yesterday", "yesterday"])
    assert (problem.column, problem.rows) == ("ts", 3)
    assert "3 rows have timestamps that cannot be parsed (expected ISO 8601" in problem.message
    assert problem.examples == ("'05/01/2026'", "'yesterday'")


def test_null_timestamps_are_an_error_separate_from_unparseable_ones():
    problem = event_problem(ts=["2026-01-05T09:00:00Z", None, None, "2026-01-05T10:00:00Z"])
    assert (problem.column, problem.rows) == ("ts", 2)
    assert problem.message == "2 rows have a null ts"


def test_timestamps_before_any_course_log_are_an_error():
    # given an event and an enrolment dated 0001-01-01 (a typo, or an empty date read as one)
    event = event_problem(ts=["2026-01-05T09:00:00Z", "0001-01-01T00:00:00Z"] * 2)
    customer = customer_problem(enrolled_at=["0001-01-01T00:00:00Z", "2026-01-02T00:00:00Z"])
    # then both are refused, naming the column, the count and the earliest value
    assert (event.column, event.rows) == ("ts", 2)
    assert "2 rows have ts before 2000-01-01" in event.message
    assert (customer.column, customer.rows) == ("enrolled_at", 1)
    assert "enrolled_at before 2000-01-01" in customer.message


def test_integer_epoch_timestamps_are_refused_not_read_as_nanoseconds():
    problem = event_problem(ts=[1767225600, 1767225601, 1767225602, 1767225603])
    assert problem.column == "ts" and "has type int64, expected timestamp" in problem.message


def test_future_timestamps_are_an_error_with_count_and_max():
    # given two events after "now" and one exactly at "now" (not in the future)
    ts = ["2026-01-05T09:00:00Z", "2031-01-01T00:00:00Z", "2026-03-02T00:00:00Z", NOW.isoformat()]
    # when loaded with now as the limit
    problem = event_problem(ts=ts)
    # then the error counts 2 rows and gives the latest
    assert (problem.column, problem.rows) == ("ts", 2)
    assert str(problem).startswith(
        "events: column ts: 2 rows have ts in the future (max 2031-01-01 00:00:00+00:00"
    )


def test_future_check_takes_a_naive_now_as_utc():
    # given an event at 09:00 UTC and a naive "now" of 08:00 (meaning UTC)
    frame = events_frame(ts=["2026-01-05T09:00:00Z"] * 4, item=["a", "b", "c", "d"])
    # when loaded
    _, problems, _ = load_events(frame, as_of_limit=datetime(2026, 1, 5, 8, 0))
    # then all four are in the future
    assert only_error(problems).rows == 4


def test_negative_durations_are_an_error_with_examples():
    problem = event_problem(duration_s=[600.0, -5.0, -1.0, None])
    assert (problem.column, problem.rows) == ("duration_s", 2)
    assert problem.message == "2 rows have a negative duration_s (min -5)"
    assert problem.examples == ("-5.0", "-1.0")


def test_infinite_durations_are_an_error():
    problem = event_problem(duration_s=[600.0, np.inf, None, None])
    assert (problem.column, problem.rows) == ("duration_s", 1)
    assert problem.message == "1 row has an infinite duration_s"


def test_unknown_channels_are_an_error_listing_them_with_counts():
    problem = event_problem(channel=["web", "tv", "tv", "Web"])
    assert (problem.column, problem.rows) == ("channel", 3)
    assert "3 rows have a channel outside web, mobile, api" in problem.message
    assert problem.examples == ("'tv' (2 rows)", "'Web' (1 row)")


def test_unknown_event_types_are_an_error_listing_them_with_counts():
    problem = event_problem(event_type=["session", "login", "login", "logout"])
    assert (problem.column, problem.rows) == ("event_type", 3)
    assert "3 rows have event types outside the canonical vocabulary (2 types)" in problem.message
    assert problem.examples == ("'login' (2 rows)", "'logout' (1 row)")


def test_with_a_mapping_the_error_lists_the_types_it_does_not_map():
    # given a mapping covering login but not logout
    mapping = EventMapping(event_types={"login": "session"})
    frame = events_frame(event_type=["session", "login", "login", "logout"])
    # when loaded with it
    _, problems, _ = load_events(frame, mapping=mapping)
    # then only logout is reported, as not mapped by the mapping
    problem = only_error(problems)
    assert problem.rows == 1
    assert "1 row has event types not mapped by the mapping" in problem.message
    assert problem.examples == ("'logout' (1 row)",)


def test_allow_unknown_loads_unknown_types_as_other_with_a_note():
    # given events with an unknown type
    frame = events_frame(event_type=["session", "login", "login", "quiz_passed"])
    # when validated with allow_unknown
    result = validate_inputs(frame, customers_frame(), allow_unknown=True, now=NOW)
    # then it passes, the type is "other" and a note counts it
    assert result.report.ok, result.report.render()
    assert result.events["event_type"].tolist() == ["session", "other", "other", "quiz_passed"]
    note = result.report.notes[0]
    assert (note.column, note.rows) == ("event_type", 2)
    assert "loaded as 'other'" in note.message


def test_unknown_product_tags_are_an_error_listing_them():
    problem = customer_problem(product_tag=["PT_001", "Pro"])
    assert (problem.column, problem.rows) == ("product_tag", 1)
    assert "1 row has a product_tag outside PT_001, PT_002, PT_003" in problem.message
    assert problem.examples == ("'Pro' (1 row)",)


def test_duplicate_customer_ids_are_an_error_with_count():
    # given three customers, two sharing an id
    frame = pd.concat([customers_frame(), customers_frame().iloc[:1]], ignore_index=True)
    # when loaded
    _, problems = load_customers(frame)
    # then the repeated id is reported with its two rows
    problem = only_error(problems)
    assert (problem.column, problem.rows) == ("customer_id", 2)
    assert problem.message == "2 rows have a repeated customer_id (1 value)"
    assert problem.examples == ("'C1'",)


def test_enrolment_in_the_future_is_an_error():
    problem = customer_problem(enrolled_at=["2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"])
    assert (problem.column, problem.rows) == ("enrolled_at", 1)
    assert "1 row has enrolled_at in the future" in problem.message


def test_negative_mrr_is_an_error():
    problem = customer_problem(mrr=[-10.0, None])
    assert (problem.column, problem.rows) == ("mrr", 1)
    assert problem.message == "1 row has a negative mrr (min -10)"


# --- cross-checks ---------------------------------------------------------------------------------


def test_events_of_unknown_customers_are_an_error_with_count_and_ids():
    # given events of C3 and C4, who are not customers
    frame = events_frame(customer_id=["C1", "C3", "C3", "C4"])
    # when validated
    result = validate_inputs(frame, customers_frame(), now=NOW)
    # then one error on the events counts the rows and the ids
    problem = only_error(result.report.problems)
    assert (problem.source, problem.column, problem.rows) == ("events", "customer_id", 3)
    assert problem.message == "3 rows have a customer_id not in customers (2 distinct ids)"
    assert problem.examples == ("'C3'", "'C4'")


def test_events_before_enrolment_are_an_error_with_count_and_examples():
    # given two events of C2 before C2 enrolled (2026-01-02)
    ts = ["2026-01-05T09:00:00Z", "2026-01-05T09:30:00Z", "2025-12-31T10:00:00Z", "2026-01-01"]
    # when validated
    result = validate_inputs(events_frame(ts=ts), customers_frame(), now=NOW)
    # then the error counts both rows, the one customer, and shows the enrolment
    problem = only_error(result.report.problems)
    assert (problem.column, problem.rows) == ("ts", 2)
    assert problem.message == "2 rows have ts before their customer's enrolled_at (1 customer)"
    assert problem.examples == (
        "'C2' at 2025-12-31 10:00:00+00:00 (enrolled 2026-01-02 00:00:00+00:00)",
    )


# --- duplicates and nothing else dropped ----------------------------------------------------------


def test_exact_duplicate_events_are_dropped_and_counted_as_a_note():
    # given the four events plus two exact copies of the first
    frame = events_frame()
    doubled = pd.concat([frame, frame.iloc[[0, 0]]], ignore_index=True)
    # when validated
    result = validate_inputs(doubled, customers_frame(), now=NOW)
    # then the copies are dropped and counted, and it still passes
    assert result.report.ok
    assert result.report.duplicates_dropped == 2
    assert len(result.events) == 4
    assert result.report.notes[0].message == "2 exact duplicate rows dropped"


def test_rows_differing_in_one_column_are_not_duplicates():
    # given two events at the same instant for the same learner that differ only in item
    frame = events_frame(
        customer_id=["C1"] * 4, ts=["2026-01-05T09:00:00Z"] * 4, item=["a", "b", None, "a"]
    )
    # when loaded
    same_otherwise = frame.assign(event_type="feature_used", duration_s=None, channel="web")
    events, _, dropped = load_events(same_otherwise)
    # then only the exact copy (the 4th row) is dropped
    assert dropped == 1
    assert events["item"].tolist()[:2] == ["a", "b"]
    assert len(events) == 3


def test_exact_duplicates_narrowing_finds_the_same_rows_as_a_full_comparison():
    # given rows with repeats in every pattern: full copies, same key but other values
    frame = pd.DataFrame(
        {"k": [1, 1, 1, 2, 2, 3], "v": ["a", "a", "b", "c", "c", "d"], "w": [0, 0, 0, 1, 2, 3]}
    )
    # when duplicates are found with and without narrowing by k
    narrowed, full = exact_duplicates(frame, narrow_by=["k"]), exact_duplicates(frame)
    # then both agree with pandas, first occurrences kept
    expected = frame.duplicated().to_numpy()
    assert narrowed.tolist() == full.tolist() == expected.tolist()
    assert expected.tolist() == [False, True, False, False, False, False]


def test_bad_rows_are_reported_never_dropped():
    # given events with a negative duration, an unknown channel and an unknown customer
    frame = events_frame(duration_s=[-1.0, None, None, None], channel=["tv", "web", None, None])
    frame.loc[3, "customer_id"] = "C9"
    # when validated
    result = validate_inputs(frame, customers_frame(), now=NOW)
    # then it fails with three errors and every row is still in the frame
    assert not result.report.ok
    assert len(result.report.errors) == 3
    assert len(result.events) == 4


# --- mapping a foreign log ------------------------------------------------------------------------


def test_foreign_csv_log_passes_through_its_mapping_file():
    # given a foreign CSV log, its customers and its mapping YAML
    events, customers = DATA / "foreign_events.csv", DATA / "foreign_customers.csv"
    # when validated with the mapping path
    result = validate_inputs(events, customers, mapping=DATA / "foreign_mapping.yaml", now=NOW)
    # then it passes (the ignored column is noted) and the types are canonical
    assert result.report.ok, result.report.render()
    assert result.events["event_type"].tolist() == [
        "session",
        "lesson_completed",
        "community_post",
        "quiz_passed",
    ]
    assert result.events["ts"].iloc[1] == pd.Timestamp("2026-01-05T08:20:00Z")
    assert result.events["channel"].isna().all()
    assert any("ip_address" in note.message for note in result.report.notes)


def test_mapping_rename_onto_an_existing_column_is_an_error():
    # given a log with both user_id and customer_id, and a mapping renaming user_id
    frame = events_frame().assign(user_id="U1")
    mapping = EventMapping(columns={"user_id": "customer_id"})
    # when loaded
    _, problems, _ = load_events(frame, mapping=mapping)
    # then the conflict is reported on customer_id
    problem = errors_of(problems)[0]
    assert problem.column == "customer_id"
    assert "renames user_id to customer_id, but the file already has" in problem.message


def test_unusable_mapping_file_raises_mapping_error(tmp_path):
    # given a mapping file mapping onto an unknown type
    path = tmp_path / "bad.yaml"
    path.write_text("event_types:\n  login: logged_in\n", encoding="utf-8")
    # when validation is asked to use it, then the mapping error surfaces
    with pytest.raises(MappingError, match=r"bad\.yaml: key event_types\.login"):
        validate_inputs(events_frame(), customers_frame(), mapping=path, now=NOW)


# --- the report, InputError and validate_frame ----------------------------------------------------


def test_load_valid_inputs_raises_input_error_with_the_rendered_report():
    # given events with a future timestamp
    frame = events_frame(ts=["2026-01-05T09:00:00Z"] * 3 + ["2031-01-01T00:00:00Z"])
    # when loaded as valid inputs
    with pytest.raises(InputError) as caught:
        load_valid_inputs(frame, customers_frame(), now=NOW)
    # then the message is the report, naming the problem
    message = str(caught.value)
    assert message.startswith("input validation FAILED: 1 error, 0 notes")
    assert "events: column ts: 1 row has ts in the future (max 2031-01-01 00:00:00+00:00" in message
    assert not caught.value.report.ok


def test_load_valid_inputs_returns_validated_frames_when_all_is_well():
    # given valid inputs
    # when loaded
    events, customers = load_valid_inputs(events_frame(), customers_frame(), now=NOW)
    # then the frames are in contract form
    assert events["ts"].dtype == UTC_INSTANT
    assert customers["enrolled_at"].dtype == UTC_INSTANT


def test_report_renders_errors_before_notes():
    # given a report with one note and one error
    note = Problem("events.csv", None, "2 exact duplicate rows dropped", 2, severity="note")
    error = Problem("events.csv", "channel", "1 row has a channel outside web", 1, ("'tv'",))
    report = ValidationReport((note, error), events_rows=10, customers_rows=3, duplicates_dropped=2)
    # when rendered as text
    text = report.render()
    # then the text lists the error first
    lines = text.splitlines()
    assert lines[0] == "input validation FAILED: 1 error, 1 note"
    assert (
        lines[3]
        == "  error: events.csv: column channel: 1 row has a channel outside web; e.g. 'tv'"
    )
    assert lines[4] == "  note: events.csv: 2 exact duplicate rows dropped"


def test_validate_frame_turns_pandera_failures_into_friendly_problems():
    # given a feature frame with its keys only
    frame = pd.DataFrame({"customer_id": ["C1"], "as_of": [pd.Timestamp("2026-02-01")]})
    # when validated against the feature-frame schema
    _, problems = validate_frame(frame, feature_frame_schema(), source="features.parquet")
    # then each missing column is its own problem naming the source and the column
    missing = [p for p in problems if p.message == "is missing"]
    assert len(missing) == len(feature_frame_schema().columns) - 2
    assert str(missing[0]).startswith("features.parquet: column ")


def test_validate_frame_describes_types_repeated_keys_and_bad_values_in_plain_words():
    # given labels with a repeated (customer_id, as_of), a churned of 3 and a text as_of
    frame = pd.DataFrame(
        {"customer_id": ["C1", "C1", "C2"], "as_of": ["2026-02-01"] * 3, "churned": [0, 3, 1]}
    )
    mistyped = frame.assign(churned=["no", "yes", "no"], customer_id=["C1", "C2", "C3"])
    # when validated against the labels schema
    _, problems = validate_frame(frame, LabelsSchema, source="labels.csv")
    _, type_problems = validate_frame(mistyped, LabelsSchema, source="labels.csv")
    # then each failure is one readable line naming the column(s) and the row count
    assert [str(p) for p in problems] == [
        "labels.csv: column customer_id, as_of: 2 rows have a repeated (customer_id, as_of)",
        "labels.csv: column churned: 1 row has churned outside [0, 1]; e.g. 3",
    ]
    assert str(type_problems[0]) == (
        "labels.csv: column churned: 3 rows have churned values that are not int8; e.g. 'no', 'yes'"
    )


def test_validate_frame_reports_columns_out_of_order_once():
    # given a feature frame whose first two features are swapped
    frame = pd.DataFrame({"customer_id": ["C1"], "as_of": [pd.Timestamp("2026-02-01")]})
    schema = feature_frame_schema()
    for name in list(schema.columns)[2:]:
        frame[name] = pd.Series([None], dtype=object)
    names = list(frame.columns)
    names[2], names[3] = names[3], names[2]
    # when validated
    _, problems = validate_frame(frame[names], schema, source="features.parquet")
    # then one problem says the columns are out of order and names the swapped ones
    ordering = [p for p in problems if "order" in p.message]
    assert len(ordering) == 1
    assert ordering[0].message.endswith(f"{names[2]}, {names[3]}")
