"""Tests for features/parquet_check.py: clean files are proved clean, nothing looser than the
validation passes, and what the proof passes gives the features the validated frames give."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.parquet_check import WHITESPACE_CODES, hash_repeats, prove_clean
from features.validation import validate_inputs
from features.windows import build_features

NOW = datetime(2026, 3, 1, tzinfo=UTC)
AS_OF = date(2026, 1, 20)


def events_frame() -> pd.DataFrame:
    """Six valid events of two customers, typed as a parquet log holds them (ts naive = UTC)."""
    return pd.DataFrame(
        {
            "customer_id": ["C1", "C1", "C2", "C2", "C2", "C1"],
            "ts": pd.to_datetime(
                [
                    "2026-01-05 09:00:00",
                    "2026-01-05 09:30:00.123456",
                    "2026-01-06 10:00:00",
                    "2026-01-07 11:00:00",
                    "2026-01-12 08:00:00",
                    "2026-01-18 23:59:59.999999",
                ],
                format="ISO8601",
            ).astype("datetime64[us]"),
            "event_type": [
                "session", "lesson_completed", "session", "quiz_passed", "feature_used", "session",
            ],
            "duration_s": [600.0, None, 300.0, None, None, 0.0],
            "channel": ["web", "web", "mobile", None, "api", "mobile"],
            "item": [None, "L001", None, "Q01", "F1", None],
        }
    )  # fmt: skip


def customers_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3"],
            "product_tag": ["PT_001", "PT_003", "PT_002"],
            "enrolled_at": pd.to_datetime(
                ["2026-01-01", "2026-01-02", "2026-01-10"], utc=True
            ).astype("datetime64[us, UTC]"),
            "mrr": [49.0, 0.0, None],
        }
    )


def write(tmp_path: Path, events: pd.DataFrame, customers: pd.DataFrame) -> tuple[Path, Path]:
    events_path, customers_path = tmp_path / "events.parquet", tmp_path / "customers.parquet"
    events.to_parquet(events_path, index=False)
    customers.to_parquet(customers_path, index=False)
    return events_path, customers_path


def set_at(frame: pd.DataFrame, column: str, row: int, value: object) -> pd.DataFrame:
    changed = frame.copy()
    if value is not None and changed[column].dtype == object:
        changed[column] = changed[column].astype(object)
    changed.loc[row, column] = value
    return changed


def keep_nan(path: Path, column: str) -> None:
    """Rewrite ``column`` with its NaN as NaN: pandas' ``to_parquet`` writes them as nulls."""
    table = pq.read_table(path)
    values = table.column(column).to_numpy(zero_copy_only=False).astype(float)
    values[np.isnan(values)] = np.nan  # the nulls read back as NaN: write them as values
    at = table.schema.get_field_index(column)
    pq.write_table(table.set_column(at, column, pa.array(values, from_pandas=False)), path)


@dataclass(frozen=True)
class Case:
    """A change to the clean inputs; ``valid``: whether the validation still accepts them;
    ``nan_in``: the (file, column) whose NaN are written as NaN, not as nulls."""

    change: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]
    valid: bool = False
    nan_in: tuple[str, str] | None = None


def events_case(column: str, value: object, *, valid: bool = False) -> Case:
    return Case(lambda e, c: (set_at(e, column, 2, value), c), valid=valid)


def customers_case(column: str, value: object, *, valid: bool = False) -> Case:
    return Case(lambda e, c: (e, set_at(c, column, 1, value)), valid=valid)


REFUSED = {
    # the validation reports these as errors
    "null event id": events_case("customer_id", None),
    "blank event id": events_case("customer_id", "   "),
    "tab event id": events_case("customer_id", "\t"),
    "ideographic space event id": events_case("customer_id", "\u3000"),
    "null ts": events_case("ts", pd.NaT),
    "ts before 2000": events_case("ts", pd.Timestamp("1999-12-31 23:59:59")),
    "ts in the future": events_case("ts", pd.Timestamp("2026-03-01 00:00:00.000001")),
    "null event type": events_case("event_type", None),
    "unknown event type": events_case("event_type", "login"),
    "negative duration": events_case("duration_s", -1.0),
    "infinite duration": events_case("duration_s", np.inf),
    "minus infinite duration": events_case("duration_s", -np.inf),
    "unknown channel": events_case("channel", "fax"),
    "unknown customer": events_case("customer_id", "C9"),
    "event before enrolment": events_case("ts", pd.Timestamp("2026-01-01 23:59:59.999999")),
    "extra column": Case(lambda e, c: (e.assign(country="FR"), c)),
    "missing optional column": Case(lambda e, c: (e.drop(columns="item"), c), valid=True),
    "missing required column": Case(lambda e, c: (e.drop(columns="event_type"), c)),
    "ts as text": Case(lambda e, c: (e.assign(ts=e["ts"].astype(str) + "Z"), c), valid=True),
    "ts as epoch integers": Case(lambda e, c: (e.assign(ts=e["ts"].astype("int64")), c)),
    "event id as the stored index": Case(lambda e, c: (e.set_index("customer_id"), c)),
    "null customer id": customers_case("customer_id", None),
    "repeated customer id": customers_case("customer_id", "C1"),
    "unknown product tag": customers_case("product_tag", "PT_009"),
    "null product tag": customers_case("product_tag", None),
    "null enrolment": customers_case("enrolled_at", pd.NaT),
    "enrolment in the future": customers_case("enrolled_at", pd.Timestamp("2027-01-01", tz="UTC")),
    "negative mrr": customers_case("mrr", -5.0),
    "infinite mrr": customers_case("mrr", np.inf),
    # the validation accepts or changes these; the proof leaves them to it
    "exact duplicate event": Case(lambda e, c: (pd.concat([e, e.iloc[[3]]]), c), valid=True),
    "NaN duration (a null to pandas, a value to DuckDB)": Case(
        lambda e, c: (e, c), valid=True, nan_in=("events", "duration_s")
    ),
    "NaN mrr": Case(lambda e, c: (e, c), valid=True, nan_in=("customers", "mrr")),
    "id starting with a space": Case(
        lambda e, c: (
            e.assign(customer_id=e["customer_id"].replace("C1", " C1")),
            c.assign(customer_id=c["customer_id"].replace("C1", " C1")),
        ),
        valid=True,
    ),
    "no events": Case(lambda e, c: (e.iloc[:0], c), valid=True),
    "no customers": Case(lambda e, c: (e, c.iloc[:0])),
    "integer durations": Case(
        lambda e, c: (e.assign(duration_s=e["duration_s"].fillna(0).astype("int64")), c),
        valid=True,
    ),
}


def test_clean_files_are_proved_clean(tmp_path):
    # given clean inputs as parquet files (the validation agrees they are clean)
    events, customers = write(tmp_path, events_frame(), customers_frame())
    assert validate_inputs(events, customers, now=NOW).report.ok
    # when the proof runs, then it holds
    assert prove_clean(events, customers, now=NOW).clean


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_the_proof_is_never_looser_than_the_validation(tmp_path, case):
    # given clean inputs with one change the validation refuses, or accepts only by changing or
    # reading values in a way DuckDB does not
    events, customers = write(tmp_path, *case.change(events_frame(), customers_frame()))
    if case.nan_in is not None:
        keep_nan(tmp_path / f"{case.nan_in[0]}.parquet", case.nan_in[1])
    validated = validate_inputs(events, customers, now=NOW)
    changed = len(validated.events) != len(pd.read_parquet(events))
    assert validated.report.ok == case.valid, validated.report
    # when the proof runs
    proof = prove_clean(events, customers, now=NOW)
    # then it does not hold, and says which file and why in one line
    assert not proof.clean
    assert proof.reason.startswith(("events.parquet:", "customers.parquet:")), proof.reason
    assert "\n" not in proof.reason
    if case is REFUSED["exact duplicate event"]:
        assert changed and "exact_duplicates" in proof.reason


def test_the_future_is_judged_against_now_to_the_microsecond(tmp_path):
    # given an event exactly at now: not in the future (the validation's `ts > now`)
    at_now = set_at(events_frame(), "ts", 2, pd.Timestamp("2026-03-01 00:00:00"))
    events, customers = write(tmp_path, at_now, customers_frame())
    assert validate_inputs(events, customers, now=NOW).report.ok
    # then the proof holds at now and not a microsecond before it
    assert prove_clean(events, customers, now=NOW).clean
    earlier = prove_clean(events, customers, now=NOW - pd.Timedelta(microseconds=1))
    assert not earlier.clean and "ts_missing_early_or_future 1" in earlier.reason


def test_what_cannot_be_a_parquet_file_is_left_to_the_validation(tmp_path):
    # given a frame, a CSV file and a missing file
    events, customers = write(tmp_path, events_frame(), customers_frame())
    csv = tmp_path / "events.csv"
    events_frame().to_csv(csv, index=False)
    # then none of them is proved, each reason naming the input
    assert "a frame" in prove_clean(events_frame(), customers, now=NOW).reason
    expected = "events: expected a parquet file, got events.csv"
    assert prove_clean(csv, customers, now=NOW).reason == expected
    missing = prove_clean(events, tmp_path / "nope.parquet", now=NOW)
    assert not missing.clean and "nope.parquet" in missing.reason
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    assert "unreadable" in prove_clean(broken, customers, now=NOW).reason


def test_what_duckdb_cannot_read_as_the_checks_do_is_left_to_the_validation(tmp_path, monkeypatch):
    # given clean files, and a DuckDB that fails on the checks' query (as on a type it has no
    # function for)
    import duckdb

    import features.parquet_check as parquet_check

    events_path, customers_path = write(tmp_path, events_frame(), customers_frame())

    def fail(*_args):
        raise duckdb.BinderException("Binder Error: No function matches epoch_us(X)\nmore")

    monkeypatch.setattr(parquet_check, "values_proof", fail)
    # when they are proved, then the proof says it could not check them, in one line
    proof = prove_clean(events_path, customers_path, now=NOW)
    assert not proof.clean
    assert proof.reason == (
        "could not be checked in DuckDB (Binder Error: No function matches epoch_us(X))"
    )


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(  # 500 ns before midnight: both truncate to the microsecond, not round
            lambda ts: ts.astype("datetime64[ns]") + pd.to_timedelta([0] * 5 + [500], unit="ns"),
            id="naive nanoseconds",
        ),
        pytest.param(lambda ts: ts.astype("datetime64[ms]"), id="naive milliseconds"),
        pytest.param(
            lambda ts: ts.dt.tz_localize("UTC").dt.tz_convert("America/New_York"),
            id="aware, another time zone",
        ),
        pytest.param(  # pandas' own unit for a zoned datetime: DuckDB's TIMESTAMPTZ_NS
            lambda ts: (
                (ts.astype("datetime64[ns]") + pd.to_timedelta([0] * 5 + [500], unit="ns"))
                .dt.tz_localize("UTC")
                .dt.tz_convert("Asia/Kolkata")
            ),
            id="aware nanoseconds",
        ),
    ],
)
def test_proved_files_give_the_features_of_the_validated_frames(tmp_path, typed):
    # given clean files whose timestamps are typed as other writers type them
    events = events_frame().assign(ts=lambda frame: typed(frame["ts"]))
    events_path, customers_path = write(tmp_path, events, customers_frame())
    # when they are proved clean
    assert prove_clean(events_path, customers_path, now=NOW).clean
    # then the features read from the files equal those of the validated frames
    validated = validate_inputs(events_path, customers_path, now=NOW)
    from_frames = build_features(validated.events, validated.customers, as_of=[AS_OF])
    from_files = build_features(events_path, customers_path, as_of=[AS_OF])
    assert len(from_files) == 3
    pd.testing.assert_frame_equal(from_files, from_frames)


def test_the_blank_id_check_knows_every_character_python_strips():
    # given Python's whitespace (what the validation's `str.strip` strips), then the list is it
    python = [code for code in range(sys.maxunicode + 1) if chr(code).isspace()]
    assert list(WHITESPACE_CODES) == python


# hashes at the ends of the range and around its top bits, so that repeats fall next to them
_EDGES = [0, 1, 2**61 - 1, 2**61, 2**62, 2**63 - 1, 2**63, 2**63 + 1, 3 * 2**62, 2**64 - 1]


@given(st.lists(st.sampled_from(_EDGES) | st.integers(0, 2**64 - 1), max_size=40))
def test_hash_repeats_counts_every_hash_beyond_the_first_of_its_value(values):
    # given 64-bit row hashes, some equal, in any order
    hashes = np.array(values, dtype=np.uint64)
    # when their repeats are counted
    repeats = hash_repeats(hashes)
    # then each value counts as many times as it occurs after its first
    assert repeats == sum(count - 1 for count in Counter(values).values())
