"""The inputs' proof carried from the day before (features/kept_proof.py).

A log passes the kept proof exactly when it passes the whole one (``prove_clean``): every change
the whole proof refuses is refused when it falls in the events since the kept bound, and any
change before the bound sends the day to the whole proof.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.kept_proof import (
    LEARNERS_NAME,
    RECORD_NAME,
    ProofRecord,
    SameAs,
    kept_record,
    prove_kept,
)
from features.parquet_check import ROW_HASH, prove_clean
from tests.features.test_parquet_check import (
    NOW,
    customers_frame,
    events_frame,
    keep_nan,
    set_at,
    write,
)

BOUND = pd.Timestamp("2026-01-17")  # the midnight of the day before the base log's last day
NEXT_BOUND = pd.Timestamp("2026-01-19")  # and of the appended log's


def appended() -> pd.DataFrame:
    """The base log (``events_frame``) and the next two days' events: rows 6, 7 and 8."""
    more = pd.DataFrame(
        {
            "customer_id": ["C2", "C3", "C1"],
            "ts": pd.to_datetime(
                ["2026-01-19 10:00:00", "2026-01-20 09:00:00", "2026-01-20 09:30:00.5"],
                format="ISO8601",
            ).astype("datetime64[us]"),
            "event_type": ["session", "lesson_completed", "session"],
            "duration_s": [120.0, None, 60.0],
            "channel": ["web", "mobile", "api"],
            "item": [None, "L002", None],
        }
    )
    return pd.concat([events_frame(), more], ignore_index=True)


@pytest.fixture
def kept(tmp_path) -> tuple[Path, Path, Path]:
    """The base log proved with its proof kept: (events, customers, the kept proof's directory)."""
    events, customers = write(tmp_path, events_frame(), customers_frame())
    directory = tmp_path / "kept"
    proof = prove_kept(events, customers, now=NOW, directory=directory)
    assert proof.clean and proof.how == "in full: no kept proof"
    return events, customers, directory


def record_of(directory: Path) -> ProofRecord:
    return ProofRecord.model_validate_json((directory / RECORD_NAME).read_bytes())


def kept_part(events: Path, before: pd.Timestamp) -> tuple[int, int, pd.DataFrame]:
    """The count, the hash sum and the learners of the log's events before ``before``."""
    con = duckdb.connect()
    where = f"FROM read_parquet('{events}') WHERE ts < TIMESTAMP '{before}'"
    rows, total = con.execute(f"SELECT count(*), sum({ROW_HASH}) {where}").fetchall()[0]
    learners = con.execute(
        f"SELECT customer_id, count(*) AS events, min(epoch_us(ts)) AS first_us {where} "
        "GROUP BY customer_id ORDER BY customer_id"
    ).df()
    return rows, total % 2**64, learners


def kept_learners(directory: Path) -> pd.DataFrame:
    frame = pd.read_parquet(directory / LEARNERS_NAME)
    return frame.sort_values("customer_id", ignore_index=True)


def test_the_whole_proof_keeps_the_events_before_the_day_before_the_log_s_last(kept):
    # given the base log proved with its proof kept (the fixture), then the record holds its
    # events before the midnight of the day before its last day (an event a day late is new):
    # their count, hash sum (modulo 2**64) and learners
    events, _, directory = kept
    record = record_of(directory)
    rows, fingerprint, learners = kept_part(events, BOUND)
    assert (record.before, record.rows, record.fingerprint) == (BOUND, 5, fingerprint)
    assert rows == 5 and record.events_path == str(events.resolve())
    pd.testing.assert_frame_equal(kept_learners(directory), learners, check_dtype=False)


def test_an_appended_log_is_checked_since_the_kept_bound_and_its_proof_moves_on(kept):
    # given the kept proof of the base log, and the log written again with two more days
    events, customers, directory = kept
    write(events.parent, appended(), customers_frame())
    # when it is proved
    proof = prove_kept(events, customers, now=NOW, directory=directory)
    # then it is clean, only the events since the bound checked
    assert proof.clean
    assert proof.how == "since 2026-01-17: 4 events checked, 5 kept"
    # and the kept proof moved to the appended log's last day, as a whole proof keeps it
    record = record_of(directory)
    rows, fingerprint, learners = kept_part(events, NEXT_BOUND)
    assert (record.before, record.rows, record.fingerprint) == (NEXT_BOUND, rows, fingerprint)
    assert rows == 6
    pd.testing.assert_frame_equal(kept_learners(directory), learners, check_dtype=False)
    # and the day after is checked since that bound
    again = prove_kept(events, customers, now=NOW, directory=directory)
    assert again.clean and again.how == "since 2026-01-19: 3 events checked, 6 kept"


def test_an_event_a_day_late_is_checked_as_new_not_as_a_changed_past(kept):
    # given the kept proof, and the appended log with an event of the day before the base log's
    # last day that arrived only now
    events, customers_path, directory = kept
    late = appended().iloc[[6]].assign(ts=pd.Timestamp("2026-01-17 12:00"))
    write(events.parent, pd.concat([appended(), late]), customers_frame())
    # when it is proved, then it is checked since the kept bound, the late event among the new
    proof = prove_kept(events, customers_path, now=NOW, directory=directory)
    assert proof.clean and proof.how == "since 2026-01-17: 5 events checked, 5 kept"


def day_tallies(events: Path, since: pd.Timestamp) -> dict:
    """Per UTC day of the log's events from ``since`` on: their count and hash sum mod 2**64."""
    rows = (
        duckdb.connect()
        .execute(
            f"SELECT CAST(ts AS DATE), count(*), sum({ROW_HASH}) FROM read_parquet('{events}') "
            f"WHERE ts >= TIMESTAMP '{since}' GROUP BY 1"
        )
        .fetchall()
    )
    return {day: (count, total % 2**64) for day, count, total in rows}


def test_a_whole_proof_keeps_the_days_since_its_bound_and_no_continuity(kept):
    # given the base log proved in full (the fixture), then its record holds its stamp, the
    # days from its bound on, and nothing proved of another file
    events, _, directory = kept
    record = record_of(directory)
    stat = events.stat()
    assert (record.events_size, record.events_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert record.days == day_tallies(events, BOUND) and len(record.days) == 1
    assert record.same_as is None


def with_copy(row: int, at: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A change that adds a copy of event ``row`` at ``at``."""
    return lambda e: pd.concat([e, e.iloc[[row]].assign(ts=pd.Timestamp(at))])


SAME_BEFORE = {
    "the day before's events all there": (lambda e: e, "2026-01-19"),
    "a new event on its last day": (with_copy(6, "2026-01-18 12:00"), "2026-01-18"),
    "a new event on the bound's day": (with_copy(6, "2026-01-17 12:00"), "2026-01-17"),
}


@pytest.mark.parametrize(("change", "before"), SAME_BEFORE.values(), ids=SAME_BEFORE.keys())
def test_a_proof_since_says_until_when_the_log_is_the_day_before_s(kept, change, before):
    # given the kept proof of the base log (events up to 2026-01-18), and the log written again
    # with two more days and maybe an event within the days it checks again
    events, customers_path, directory = kept
    base = events.stat()
    write(events.parent, change(appended()), customers_frame())
    # when it is proved since the kept bound
    proof = prove_kept(events, customers_path, now=NOW, directory=directory)
    assert proof.clean and proof.how.startswith("since 2026-01-17:")
    # then its record says the new file holds the base file's events up to the first day that
    # differs (the midnight after the base file's last day when none does), and its own days
    record = record_of(directory)
    assert record.same_as == SameAs(
        events_size=base.st_size, events_mtime_ns=base.st_mtime_ns,
        before=pd.Timestamp(before).to_pydatetime(),
    )  # fmt: skip
    assert record.days == day_tallies(events, NEXT_BOUND) and len(record.days) == 2
    assert kept_record(directory) == record


@dataclass(frozen=True)
class Change:
    """A change to the appended log and its customers; ``since``: whether the past before the
    kept bound is left intact (so that the events since it are what refuses it)."""

    change: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]
    since: bool = True
    nan_in: str | None = None


def new_row(column: str, value: object, row: int = 7) -> Change:
    return Change(lambda e, c: (set_at(e, column, row, value), c))


def customers(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Change:
    return Change(lambda e, c: (e, change(c)))


def a_new_learner(enrolled: str) -> Change:
    def change(events: pd.DataFrame, people: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        joined = pd.DataFrame(
            {"customer_id": ["C4"], "product_tag": ["PT_001"], "mrr": [10.0],
             "enrolled_at": pd.to_datetime([enrolled], utc=True).astype("datetime64[us, UTC]")}
        )  # fmt: skip
        return set_at(events, "customer_id", 7, "C4"), pd.concat([people, joined])

    return Change(change)


REFUSED = {
    "null event id": new_row("customer_id", None),
    "blank event id": new_row("customer_id", "   "),
    "ideographic space event id": new_row("customer_id", "\u3000"),
    "unknown customer": new_row("customer_id", "C9"),
    "null ts": new_row("ts", pd.NaT),
    "ts in the future": new_row("ts", pd.Timestamp("2026-03-01 00:00:00.000001")),
    "ts before 2000 (before the bound: the past changed)": Change(
        lambda e, c: (set_at(e, "ts", 7, pd.Timestamp("1999-12-31")), c), since=False
    ),
    "null event type": new_row("event_type", None),
    "unknown event type": new_row("event_type", "login"),
    "negative duration": new_row("duration_s", -1.0),
    "infinite duration": new_row("duration_s", np.inf),
    "unknown channel": new_row("channel", "fax"),
    "NaN duration (a null to pandas, a value to DuckDB)": Change(
        lambda e, c: (set_at(e, "duration_s", 6, np.nan), c), since=False, nan_in="duration_s"
    ),
    "a new event twice": Change(lambda e, c: (pd.concat([e, e.iloc[[8]]]), c)),
    "a new learner's event before their enrolment": a_new_learner("2026-01-25"),
    "a kept learner enrolled after their first kept event": customers(
        lambda c: set_at(c, "enrolled_at", 0, pd.Timestamp("2026-01-06", tz="UTC"))
    ),
    "a kept learner no longer a customer": customers(lambda c: c.iloc[[0, 2]]),
    "a customer enrolled in the future": customers(
        lambda c: set_at(c, "enrolled_at", 2, pd.Timestamp("2027-01-01", tz="UTC"))
    ),
    "a kept event made bad (the past changed)": Change(
        lambda e, c: (set_at(e, "duration_s", 0, -5.0), c), since=False
    ),
    "a kept event copied again (the past changed)": Change(
        lambda e, c: (pd.concat([e, e.iloc[[1]]]), c), since=False
    ),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_the_kept_proof_refuses_what_the_whole_proof_refuses(kept, case):
    # given the kept proof of the base log, and the appended log with one change
    events, customers_path, directory = kept
    write(events.parent, *case.change(appended(), customers_frame()))
    if case.nan_in is not None:
        keep_nan(events, case.nan_in)
    whole = prove_clean(events, customers_path, now=NOW)
    assert not whole.clean, whole
    # when it is proved with the kept proof
    proof = prove_kept(events, customers_path, now=NOW, directory=directory)
    # then it is refused too, in one line naming the file, by the events since the bound when
    # the past is intact, else by the whole proof, which says why
    assert not proof.clean
    assert proof.reason.startswith(("events.parquet:", "customers.parquet:")), proof.reason
    assert "\n" not in proof.reason
    assert proof.how.startswith("since 2026-01-17:" if case.since else "in full: the log before")
    # and nothing is kept of a log that is not clean: the record is the base log's
    assert record_of(directory).before == BOUND


PAST_CHANGES = {
    "an event's duration": (lambda e: set_at(e, "duration_s", 0, 601.0), "5 events, were 5"),
    "an event removed": (lambda e: e.drop(index=1), "4 events, were 5"),
    "a late event": (with_copy(0, "2026-01-10 12:00"), "6 events, were 5"),
}


@pytest.mark.parametrize(("change", "counts"), PAST_CHANGES.values(), ids=PAST_CHANGES.keys())
def test_a_clean_log_whose_past_changed_is_proved_in_full_and_kept_again(kept, change, counts):
    # given the kept proof, and the appended log with a valid change before the kept bound
    events, customers_path, directory = kept
    write(events.parent, change(appended()), customers_frame())
    # when it is proved, then it is clean, proved in full, and says what changed
    proof = prove_kept(events, customers_path, now=NOW, directory=directory)
    assert proof.clean
    assert proof.how == f"in full: the log before 2026-01-17 changed since ({counts})"
    # and its own proof is kept: the record is this log's
    rows, fingerprint, _ = kept_part(events, NEXT_BOUND)
    assert (record_of(directory).rows, record_of(directory).fingerprint) == (rows, fingerprint)


def _edit_record(directory: Path, **fields: object) -> None:
    path = directory / RECORD_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


SPOILED = {
    "no record": (lambda d: (d / RECORD_NAME).unlink(), "no kept proof"),
    "a bad record": (
        lambda d: (d / RECORD_NAME).write_text("{"),
        "the kept proof is unreadable (ValidationError)",
    ),
    "learners cut short": (
        lambda d: _cut(d / LEARNERS_NAME),
        "the kept proof is unreadable (ArrowInvalid)",
    ),
    "learners of another record": (
        lambda d: _edit_record(d, learners=99),
        "the kept proof was made otherwise (other checks or another version)",
    ),
    "another version": (
        lambda d: _edit_record(d, version="0" * 16),
        "the kept proof was made otherwise (other checks or another version)",
    ),
    "another log": (
        lambda d: _edit_record(d, events_path="/elsewhere/events.parquet"),
        "the kept proof is of another log (/elsewhere/events.parquet)",
    ),
    "made after now": (
        lambda d: _edit_record(d, now="2026-03-01T00:00:00.000001"),
        "the kept proof was made at 2026-03-01 00:00:00.000001, after now",
    ),
}


@pytest.mark.parametrize(("spoil", "why"), SPOILED.values(), ids=SPOILED.keys())
def test_a_kept_proof_that_does_not_hold_is_not_used_and_is_made_again(kept, spoil, why):
    # given the kept proof spoiled, and the appended log
    events, customers_path, directory = kept
    spoil(directory)
    valid_elsewhere = why.startswith(("the kept proof is of another", "the kept proof was made at"))
    assert (kept_record(directory) is not None) == valid_elsewhere
    write(events.parent, appended(), customers_frame())
    # when it is proved, then in full, saying why, and clean
    proof = prove_kept(events, customers_path, now=NOW, directory=directory)
    assert proof.clean and proof.how == f"in full: {why}"
    # and a sound proof is kept again: the next one is checked since its bound
    again = prove_kept(events, customers_path, now=NOW, directory=directory)
    assert again.clean and again.how.startswith("since 2026-01-19:")


def test_a_proof_that_cannot_be_kept_is_one_warning(tmp_path, caplog):
    # given clean files, and a directory that cannot be made (under a file)
    events, customers_path = write(tmp_path, events_frame(), customers_frame())
    (tmp_path / "a-file").write_text("")
    caplog.set_level(logging.WARNING, logger="features.kept_proof")
    # when they are proved, then the proof holds and one warning says where it was not kept
    proof = prove_kept(events, customers_path, now=NOW, directory=tmp_path / "a-file" / "kept")
    assert proof.clean
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "could not be kept in" in warnings[0], warnings


def test_a_proof_whose_files_cannot_be_replaced_keeps_no_record_and_no_part(tmp_path, caplog):
    # given clean files, and a directory where the learners' file is in the way (a directory)
    events, customers_path = write(tmp_path, events_frame(), customers_frame())
    directory = tmp_path / "kept"
    (directory / LEARNERS_NAME).mkdir(parents=True)
    caplog.set_level(logging.WARNING, logger="features.kept_proof")
    # when they are proved, then the proof holds and one warning says it was not kept
    assert prove_kept(events, customers_path, now=NOW, directory=directory).clean
    assert len(caplog.records) == 1 and "could not be kept in" in caplog.records[0].getMessage()
    # and nothing else is there: no record, no file written half-way
    assert sorted(path.name for path in directory.iterdir()) == [LEARNERS_NAME]
    assert kept_record(directory) is None


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(lambda ts: ts.astype("datetime64[ms]"), id="naive milliseconds"),
        pytest.param(lambda ts: ts.astype("datetime64[ns]"), id="naive nanoseconds"),
        pytest.param(
            lambda ts: ts.dt.tz_localize("UTC").dt.tz_convert("America/New_York"),
            id="aware, another time zone",
        ),
        pytest.param(
            lambda ts: (
                ts.astype("datetime64[ns]").dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")
            ),
            id="aware nanoseconds",
        ),
    ],
)
def test_the_bound_is_a_utc_midnight_whatever_the_log_s_timestamps(tmp_path, typed):
    # given logs whose timestamps are typed as other writers type them, proved on a DuckDB
    # session in another time zone (where a naive midnight is not the UTC one), with an event
    # 4 hours before the kept bound's UTC midnight (after Tokyo's)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Asia/Tokyo'")
    late = BOUND - pd.Timedelta(hours=4)

    def log(frame: pd.DataFrame) -> pd.DataFrame:
        frame = pd.concat([frame, frame.iloc[[0]].assign(ts=late)], ignore_index=True)
        return frame.assign(ts=lambda rows: typed(rows["ts"]))

    events, customers_path = write(tmp_path, log(events_frame()), customers_frame())
    directory = tmp_path / "kept"
    assert prove_kept(events, customers_path, now=NOW, directory=directory, con=con).clean
    # when the appended log is proved
    write(tmp_path, log(appended()), customers_frame())
    proof = prove_kept(events, customers_path, now=NOW, directory=directory, con=con)
    # then it is checked since the UTC midnight of the base log's last day, as a naive log is
    assert proof.clean and proof.how == "since 2026-01-17: 4 events checked, 6 kept"
    assert record_of(directory).before == NEXT_BOUND and record_of(directory).rows == 7


def test_a_log_without_events_keeps_nothing(tmp_path):
    # given an empty log (which the proof leaves to the validation)
    events, customers_path = write(tmp_path, events_frame().iloc[:0], customers_frame())
    # when it is proved with a directory, then it is not clean and nothing is kept
    proof = prove_kept(events, customers_path, now=NOW, directory=tmp_path / "kept")
    assert not proof.clean and "no_events" in proof.reason
    assert not (tmp_path / "kept").exists()


def test_files_that_cannot_be_proved_are_said_so_before_any_state_is_read(tmp_path):
    # given a frame for the events, then the kept proof says so as the whole proof does
    _, customers_path = write(tmp_path, events_frame(), customers_frame())
    proof = prove_kept(events_frame(), customers_path, now=NOW, directory=tmp_path / "kept")
    assert not proof.clean and "a frame" in proof.reason
    assert not (tmp_path / "kept").exists()
