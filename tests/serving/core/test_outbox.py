"""The outbox's pure rules (``serving.core.outbox``): rows of a plan, quiet hours, backoff, caps."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import serving.core.outbox as outbox_module
from serving.core.messages import PENDING, SUPPRESSED
from serving.core.outbox import (
    QuietHours,
    cap_until,
    empty_messages,
    outbox_rows,
    own_contexts,
    retry_at,
)
from serving.core.planned import ContextField, PlannedMessages, StepMessages, planned_messages
from tests.serving.outbox_fixtures import assert_contexts_once, messages

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


def test_a_plain_frame_with_an_id_other_than_the_message_key_is_refused_naming_it():
    # given learners of two campaigns and two steps, one id not its message_key
    frame = pd.concat(
        [messages(DAY, ["a", "b"], steps=(0, 1)), messages(DAY, ["a"], campaign="CP_09")],
        ignore_index=True,
    )
    frame.loc[3, "message_id"] = "msg-wrong"
    # then the store's boundary refuses it, naming the id
    expected = "campaign messages: 1 have an id other than message_key(...) (e.g. ['msg-wrong'])"
    with pytest.raises(ValueError, match=re.escape(expected)):
        outbox_rows(DAY, frame, "r", NOW)


def test_a_plain_frame_whose_context_is_not_a_json_object_is_refused_naming_it():
    frame = messages(DAY, ["a", "b", "c"])
    frame.loc[0, "context"] = "[1, 2]"
    frame.loc[2, "context"] = "{not json"
    ids = [frame.loc[0, "message_id"], frame.loc[2, "message_id"]]
    expected = f"campaign messages: 2 have a context that is not a JSON object (e.g. {ids})"
    with pytest.raises(ValueError, match=re.escape(expected)):
        outbox_rows(DAY, frame, "r", NOW)


def test_a_nullable_boolean_control_with_a_missing_flag_is_refused():
    frame = messages(DAY, ["a", "b"]).astype({"control": "boolean"})
    frame.loc[1, "control"] = pd.NA
    with pytest.raises(ValueError, match="1 have a control flag that is not true or false"):
        outbox_rows(DAY, frame, "r", NOW)


def planned(day: date, *, due_in: int = 0, channel: str = "email") -> PlannedMessages:
    """What the planner hands over: two learners, two steps (built by its builder)."""
    ids = ["a", "z"]
    fields = {"customer_id": ContextField.each(ids), "step_two": ContextField([0, 0], [True])}
    steps = [
        StepMessages("CP_01", step, day + timedelta(days=due_in * step), f"t{step}",
                     np.array([0, 1]), np.array([channel] * 2, dtype=object),
                     np.array(["", "B"], dtype=object), np.array([False, True]))
        for step in (0, 1)
    ]  # fmt: skip
    return planned_messages(day, ids, fields, steps)


@pytest.mark.parametrize(
    ("day", "due_in", "channel", "refused"),
    [
        (DAY, 2, "email", None),
        (DAY + timedelta(days=1), 2, "email", "are planned on another day"),
        (DAY, -1, "email", "are due before they were planned"),
        (DAY, 2, "carrier_pigeon", "channel"),
    ],
)
def test_the_planners_messages_are_accepted_and_refused_as_their_plain_frame(
    day, due_in, channel, refused
):
    # given the planner's messages, and the same messages as a plain frame
    handed = planned(day, due_in=due_in, channel=channel)
    # then both are turned into the same rows, or refused with the same words
    if refused is None:
        fast, full = (outbox_rows(DAY, m, "r", NOW) for m in (handed, handed.frame))
        pd.testing.assert_frame_equal(own_contexts(fast, fast), full, check_exact=True)
        assert_contexts_once(fast)
        assert fast["state"].tolist() == [PENDING, SUPPRESSED] * 2
        return
    errors = []
    for handover in (handed, handed.frame):
        with pytest.raises(ValueError, match=refused) as error:
            outbox_rows(DAY, handover, "r", NOW)
        errors.append(str(error.value))
    assert errors[0] == errors[1]


def test_the_planners_ids_and_contexts_are_not_worked_out_again(monkeypatch):
    # ids and contexts are right by construction (tests/serving/core/test_planned.py): the
    # boundary neither hashes nor parses them again; a plain frame still has both checked
    def refuse(*_):
        raise AssertionError("worked out again")

    monkeypatch.setattr(outbox_module, "message_keys", refuse)
    monkeypatch.setattr(outbox_module, "_is_json_object", refuse)
    assert len(outbox_rows(DAY, planned(DAY), "r", NOW)) == 4
    with pytest.raises(AssertionError, match="worked out again"):
        outbox_rows(DAY, planned(DAY).frame, "r", NOW)
