"""The outbox's pure rules (``serving.core.outbox``): rows of a plan, quiet hours, backoff, caps."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.core.messages import PENDING, SUPPRESSED
from serving.core.outbox import QuietHours, cap_until, empty_messages, outbox_rows, retry_at
from tests.serving.outbox_fixtures import messages

DAY = date(2026, 5, 10)
NOW = datetime(2026, 5, 11, 2, tzinfo=UTC)
NIGHT = QuietHours(time(21), time(7), ("email", "push"))


def test_a_plans_rows_are_pending_or_suppressed_for_the_control_with_dates_and_run():
    rows = outbox_rows(DAY, messages(DAY, ["a", "z"], steps=(0, 1), delay_days=2, control=("z",)),
                       "run-1", NOW)  # fmt: skip
    assert rows["state"].tolist() == [PENDING, PENDING, SUPPRESSED, SUPPRESSED]
    assert rows["due_on"].tolist() == [DAY, DAY + timedelta(days=2)] * 2
    assert (rows["tries"] == 0).all() and (rows["run_id"] == "run-1").all()
    assert (rows["created_at"] == NOW).all()


def test_an_empty_plan_has_no_rows():
    assert outbox_rows(DAY, empty_messages(), "r", NOW).empty


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("due_on", pd.Timestamp(DAY - timedelta(days=1)), "due before they were planned"),
        ("step", -1, "step"),
        ("control", "false", "control flag"),
    ],
)
def test_rows_breaking_the_contract_are_refused_naming_the_problem(column, value, message):
    frame = messages(DAY, ["a", "b"]).astype({column: object})
    frame.loc[0, column] = value
    with pytest.raises(ValueError, match=message):
        outbox_rows(DAY, frame, "r", NOW)


def test_a_repeated_message_id_is_refused():
    frame = pd.concat([messages(DAY, ["a"]), messages(DAY, ["a"])], ignore_index=True)
    with pytest.raises(ValueError, match="message_id"):
        outbox_rows(DAY, frame, "r", NOW)


@pytest.mark.parametrize(
    ("clock", "channel", "until"),
    [
        (time(22, 30), "email", datetime(2026, 5, 12, 7, tzinfo=UTC)),  # evening: next morning
        (time(2), "push", datetime(2026, 5, 11, 7, tzinfo=UTC)),  # after midnight: this morning
        (time(7), "email", None),  # the window ends at 07:00
        (time(12), "email", None),
        (time(22, 30), "csm_task", None),  # a person's task is not a notification
    ],
)
def test_quiet_hours_across_midnight(clock, channel, until):
    now = datetime.combine(date(2026, 5, 11), clock, tzinfo=UTC)
    assert NIGHT.until(channel, now) == until


def test_a_daytime_window_and_no_window():
    lunch = QuietHours(time(12), time(13), ("email",))
    assert lunch.until("email", NOW.replace(hour=12, minute=30)) == NOW.replace(hour=13)
    assert lunch.until("email", NOW.replace(hour=13)) is None
    assert QuietHours(time(0), time(0), ("email",)).until("email", NOW) is None


@given(st.datetimes(timezones=st.just(UTC)), st.sampled_from(["email", "push"]))
def test_quiet_hours_always_end_within_a_day_and_outside_the_window(now, channel):
    until = NIGHT.until(channel, now)
    if until is not None:
        assert now < until <= now + timedelta(hours=10)
        assert NIGHT.until(channel, until) is None


def test_retries_wait_twice_as_long_each_time_up_to_the_maximum():
    waits = [(retry_at(NOW, tries, 60, 3600) - NOW).total_seconds() for tries in range(1, 8)]
    assert waits == [60, 120, 240, 480, 960, 1920, 3600]


def test_the_cap_holds_a_learner_until_the_oldest_message_leaves_the_window():
    window = timedelta(hours=24)
    sent = [NOW - timedelta(hours=20), NOW - timedelta(hours=2), NOW - timedelta(hours=30)]
    assert cap_until(sent, 3, window, NOW) is None  # one of them is outside the window
    assert cap_until(sent, 2, window, NOW) == NOW + timedelta(hours=4)
    assert cap_until(sent, 1, window, NOW) == NOW + timedelta(hours=22)
    assert cap_until([], 1, window, NOW) is None
