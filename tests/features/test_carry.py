"""The batch day's window carried from the day before (features/carry.py, features/carry_sql.py).

The carried window must be the aggregated one to the last bit, day after day, and must give way
to the aggregated one whenever the day before's state does not hold for the log read today.
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import features.carry as carry_module
from features.carry import CarryRecord, in_time_order, items_path, state_path
from features.carry_sql import FRESH_DAYS, carried_measures
from features.kept_proof import LATE_DAYS, prove_kept
from features.window_sql import _WINDOW_AGGREGATES
from features.windows import feature_day
from tests.features.event_frames import time_ordered_log

FIRST = date(2026, 3, 10)  # the simulated log starts 2026-01-01: days with full histories
PROVED_AT = pd.Timestamp("2030-01-01", tz="UTC")  # after every simulated event


def by_time(simulated_log, out: Path, *, days: int | None = None) -> Path:
    """The simulated log in time order (as appended), up to ``days`` days after FIRST."""
    until = None if days is None else pd.Timestamp(FIRST + timedelta(days=days), tz="UTC")
    return time_ordered_log(simulated_log.events_path, out, until=until)


def day_features(events: Path, customers: Path, as_of: date, carry: Path | None) -> pd.DataFrame:
    with feature_day(events, customers, as_of, carry=carry) as day:
        return day.features(day.eligible())


def hows(caplog) -> list[str]:
    return [r.getMessage().split(": the window ")[1] for r in caplog.records if "window" in r.msg]


def test_every_window_measure_is_carried():
    # given the window's aggregates, when the carry lists what it moves, then it is all of them
    assert carried_measures() == list(_WINDOW_AGGREGATES)


def test_the_fresh_days_are_those_the_kept_proof_checks_anew():
    # given the inputs' kept proof, whose bound is LATE_DAYS before the log's last day, when the
    # carry reads its fresh days from the log, then they are those days and the last one: an
    # event the proof takes as new is in a day the carry reads again
    assert FRESH_DAYS == LATE_DAYS + 1


def test_a_carried_window_is_the_aggregated_one_day_after_day(simulated_log, tmp_path, caplog):
    # given a log in time order and a directory for the carried state
    events = by_time(simulated_log, tmp_path)
    carry = tmp_path / "carry"
    caplog.set_level(logging.INFO, logger="features.windows")

    # when eight days in a row are computed with the carry
    for offset in range(8):
        as_of = FIRST + timedelta(days=offset)
        carried = day_features(events, simulated_log.customers_path, as_of, carry)

        # then each day's features are those aggregated from the log, to the last bit
        aggregated = day_features(events, simulated_log.customers_path, as_of, None)
        pd.testing.assert_frame_equal(carried, aggregated, check_exact=True)
        assert len(carried) > 100

    # and the first day was aggregated, the seven others carried from the day before
    assert hows(caplog)[0] == f"aggregated: no state of {FIRST - timedelta(days=1)}"
    assert hows(caplog)[1:] == [f"carried from {FIRST + timedelta(days=k)}" for k in range(7)]
    # and only the last two states are kept (a rerun of the last day needs the one before)
    kept = sorted(path.name for path in carry.iterdir())
    last_two = [FIRST + timedelta(days=k) for k in (6, 7)]
    files = [path(carry, day) for day in last_two for path in (items_path, state_path)]
    files += [state_path(carry, day).with_suffix(".json") for day in last_two]
    assert kept == sorted(file.name for file in files)


def test_a_log_appended_since_is_carried_once_its_past_is_proved(simulated_log, tmp_path, caplog):
    # given yesterday's state of a log holding the days up to yesterday
    carry = tmp_path / "carry"
    events = by_time(simulated_log, tmp_path, days=0)
    day_features(events, simulated_log.customers_path, FIRST - timedelta(days=1), carry)

    # when the log is written again with one more day (a new file: another size and time)
    by_time(simulated_log, tmp_path, days=1)
    caplog.set_level(logging.INFO, logger="features.windows")
    carried = day_features(events, simulated_log.customers_path, FIRST, carry)

    # then its past is proved unchanged and the window carried: the aggregated features
    assert hows(caplog) == [f"carried from {FIRST - timedelta(days=1)}"]
    aggregated = day_features(events, simulated_log.customers_path, FIRST, None)
    pd.testing.assert_frame_equal(carried, aggregated, check_exact=True)


@pytest.mark.parametrize(
    ("late", "proof", "carried"),
    [
        pytest.param(None, "since ", True, id="one day appended"),
        pytest.param(2, "since ", True, id="and an event of the day before yesterday"),
        pytest.param(3, "in full: ", True, id="and an event of three days ago"),
        pytest.param(4, "in full: ", False, id="and an event of four days ago"),
    ],
)
def test_a_log_the_inputs_proof_kept_is_carried_without_a_scan_of_its_own(
    simulated_log, tmp_path, caplog, monkeypatch, late, proof, carried
):
    # given yesterday's inputs proof and window state, kept in one directory as `lstep score`
    # keeps them
    carry, customers, now = tmp_path / "carry", simulated_log.customers_path, PROVED_AT
    events = by_time(simulated_log, tmp_path, days=0)
    assert prove_kept(events, customers, now=now, directory=carry).clean
    day_features(events, customers, FIRST - timedelta(days=1), carry)
    # when the log is written again with one more day (and maybe an event of an earlier day
    # that arrived late), and proved since yesterday's proof where it can be
    by_time(simulated_log, tmp_path, days=1)
    if late is not None:
        frame = pd.read_parquet(events)
        day = pd.Timestamp(FIRST - timedelta(days=late), tz="UTC")
        old = frame.index[(frame["ts"] >= day) & (frame["ts"] < day + pd.Timedelta(days=1))][0]
        copy = frame.loc[[old]].assign(ts=frame.loc[[old], "ts"] + pd.Timedelta(seconds=1))
        frame = pd.concat([frame, copy]).sort_values("ts", kind="stable", ignore_index=True)
        frame.to_parquet(events, row_group_size=max(1, len(frame) // 150), index=False)
    assert prove_kept(events, customers, now=now, directory=carry).how.startswith(proof)
    scans = []
    scan = carry_module._log_before
    monkeypatch.setattr(carry_module, "_log_before", lambda *a: scans.append(a) or scan(*a))
    caplog.set_level(logging.INFO, logger="features.windows")
    computed = day_features(events, customers, FIRST, carry)

    # then the features are the aggregated ones whatever happened
    aggregated = day_features(events, customers, FIRST, None)
    pd.testing.assert_frame_equal(computed, aggregated, check_exact=True)
    # and the window is carried without a scan of the log's past when the proof says the log
    # before the kept part's end (three days before today) is yesterday's; when the proof was
    # made in full, the carry scans the past itself: it still holds for an event of a fresh day
    # yesterday (three days ago), and aggregates for one before
    (how,) = hows(caplog)
    assert len(scans) == (0 if proof == "since " else 1)
    if carried:
        assert how == f"carried from {FIRST - timedelta(days=1)}"
    else:
        assert how.startswith(f"aggregated: the log before {FIRST - timedelta(days=3)} changed")


@pytest.mark.parametrize(
    "change",
    ["an event type", "a late event", "a removed event"],
)
def test_a_changed_past_is_aggregated_again(simulated_log, tmp_path, caplog, change):
    # given yesterday's state
    carry = tmp_path / "carry"
    events = by_time(simulated_log, tmp_path)
    day_features(events, simulated_log.customers_path, FIRST - timedelta(days=1), carry)

    # when an event before yesterday is changed, added or removed in the log
    frame = pd.read_parquet(events)
    old = frame.index[frame["ts"] < pd.Timestamp(FIRST - timedelta(days=20), tz="UTC")][-1]
    if change == "an event type":
        frame.loc[old, "event_type"] = "milestone_completed"
    elif change == "a late event":
        late = frame.loc[[old]].assign(ts=frame.loc[[old], "ts"] + pd.Timedelta(seconds=1))
        frame = pd.concat([frame, late]).sort_values("ts", kind="stable", ignore_index=True)
    else:
        frame = frame.drop(index=old)
    frame.to_parquet(events, row_group_size=max(1, len(frame) // 150), index=False)
    caplog.set_level(logging.INFO, logger="features.windows")
    carried = day_features(events, simulated_log.customers_path, FIRST, carry)

    # then the day is aggregated from the log, and says why
    (how,) = hows(caplog)
    assert how.startswith(f"aggregated: the log before {FIRST - timedelta(days=3)} changed since")
    aggregated = day_features(events, simulated_log.customers_path, FIRST, None)
    pd.testing.assert_frame_equal(carried, aggregated, check_exact=True)

    # and the sums it kept prove the next day's log (written again, the same rows): carried
    frame.to_parquet(events, row_group_size=max(1, len(frame) // 150), index=False)
    day_features(events, simulated_log.customers_path, FIRST + timedelta(days=1), carry)
    assert hows(caplog)[-1] == f"carried from {FIRST}"


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        ("gap", "no state of {before}"),
        ("record", "the state of {before} is unreadable (ValidationError)"),
        ("parquet", "the state of {before} is unreadable (ArrowInvalid)"),
        ("version", "the state of {before} was computed otherwise (another version)"),
        ("log", "the state of {before} is of another log (/elsewhere/events.parquet)"),
    ],
)
def test_a_state_that_does_not_hold_is_not_read(simulated_log, tmp_path, caplog, spoil, why):
    # given a state of the day before, spoiled one way
    carry, before = tmp_path / "carry", FIRST - timedelta(days=1)
    events = by_time(simulated_log, tmp_path)
    kept = before - timedelta(days=1) if spoil == "gap" else before
    day_features(events, simulated_log.customers_path, kept, carry)
    record = state_path(carry, before).with_suffix(".json")
    if spoil == "record":
        record.write_text("{not json")
    elif spoil == "parquet":
        table = state_path(carry, before)
        table.write_bytes(table.read_bytes()[:1000])
    elif spoil in {"version", "log"}:
        fields = json.loads(record.read_text())
        fields.update(
            {"version": "other"}
            if spoil == "version"
            else {"events_path": "/elsewhere/events.parquet"}
        )
        record.write_text(json.dumps(fields))

    # when the day is computed
    caplog.set_level(logging.INFO, logger="features.windows")
    carried = day_features(events, simulated_log.customers_path, FIRST, carry)

    # then it is aggregated, says why, and its own state replaces what was there
    assert hows(caplog) == [f"aggregated: {why.format(before=before)}"]
    aggregated = day_features(events, simulated_log.customers_path, FIRST, None)
    pd.testing.assert_frame_equal(carried, aggregated, check_exact=True)
    saved = CarryRecord.model_validate_json(
        state_path(carry, FIRST).with_suffix(".json").read_text()
    )
    assert (saved.as_of, saved.events_path) == (FIRST, str(events.resolve()))


def test_a_state_that_cannot_be_saved_is_one_warning(simulated_log, tmp_path, caplog):
    # given a carry directory that cannot be made (a file is in its way)
    events = by_time(simulated_log, tmp_path)
    blocked = tmp_path / "file"
    blocked.write_text("")

    # when a day is computed
    caplog.set_level(logging.INFO)
    carried = day_features(events, simulated_log.customers_path, FIRST, blocked / "carry")

    # then its features are right and one warning says the next day is aggregated
    aggregated = day_features(events, simulated_log.customers_path, FIRST, None)
    pd.testing.assert_frame_equal(carried, aggregated, check_exact=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the next day aggregates its window" in warnings[0]


def test_a_state_that_cannot_be_replaced_leaves_no_record_and_no_part(
    simulated_log, tmp_path, caplog
):
    # given a carry directory where the day's window file is in the way (a directory)
    events = by_time(simulated_log, tmp_path)
    carry = tmp_path / "carry"
    state_path(carry, FIRST).mkdir(parents=True)

    # when a day is computed
    caplog.set_level(logging.WARNING)
    carried = day_features(events, simulated_log.customers_path, FIRST, carry)

    # then its features are right, one warning says so, and neither a record nor a file
    # written half-way is left beside what was in the way
    aggregated = day_features(events, simulated_log.customers_path, FIRST, None)
    pd.testing.assert_frame_equal(carried, aggregated, check_exact=True)
    assert len(caplog.records) == 1
    assert sorted(path.name for path in carry.iterdir()) == [state_path(carry, FIRST).name]


def test_a_log_in_learner_order_is_aggregated_and_nothing_kept(simulated_log, tmp_path, caplog):
    # given the simulated log as written, learner after learner
    carry = tmp_path / "carry"
    caplog.set_level(logging.INFO, logger="features.windows")

    # when two days are computed with a carry directory
    for as_of in (FIRST, FIRST + timedelta(days=1)):
        day_features(simulated_log.events_path, simulated_log.customers_path, as_of, carry)

    # then both are aggregated and no state is kept
    assert hows(caplog) == ["aggregated: the log is not in time order (nothing carried)"] * 2
    assert not carry.exists()


@pytest.mark.parametrize(("ordered", "expected"), [(True, True), (False, False)])
def test_time_order_is_read_off_the_row_groups(simulated_log, tmp_path, ordered, expected):
    # given the log in time order or as simulated, in ~150 row groups
    if ordered:
        events = by_time(simulated_log, tmp_path)
    else:
        events = tmp_path / "events.parquet"
        table = pq.read_table(simulated_log.events_path)
        pq.write_table(table, events, row_group_size=max(1, table.num_rows // 150))

    # when its order is read, then six days skip most of a month only in time order
    assert in_time_order(events, pd.Timestamp(FIRST)) is expected


def test_a_log_without_statistics_is_not_in_time_order(simulated_log, tmp_path):
    # given a log in time order written without column statistics
    table = pq.read_table(by_time(simulated_log, tmp_path))
    events = tmp_path / "plain.parquet"
    pq.write_table(table, events, row_group_size=1000, write_statistics=False)

    # when its order is read, then it cannot be shown to be in time order
    assert in_time_order(events, pd.Timestamp(FIRST)) is False
