"""Learners' features on demand: by id through the event index, inline merged with the store.

The batch job's ``build_features`` is the reference: by id on any day, and inline (the request's
events plus the learner's stored ones, exact repeats dropped) the rows must be the batch's rows of
the same events. Inline data that breaks the contracts gets a problem naming the learner and the
field; the other learners of the group still get their rows.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from features.online_inputs import TypeAvailability
from features.windows import build_features, event_type_firsts
from serving.core.asks import LearnerAsk
from serving.core.problems import Invalid, NotFound, TooLarge
from serving.infra import learners
from serving.infra.learners import LearnerData, day_features
from tests.serving.fixtures import NOW

DAYS = (date(2026, 2, 14), date(2026, 5, 21), date(2026, 6, 1))
"""Days that are no batch day: mid-log, the log's last week, and after the log ended."""


@pytest.fixture(scope="module")
def data(simulated_log) -> LearnerData:
    return LearnerData.open(simulated_log.events_path.parent, max_events=50)


def batch_rows(events, customers, ids, day) -> pd.DataFrame:
    spine = pd.DataFrame({"customer_id": ids, "as_of": pd.Timestamp(day)})
    return build_features(events, customers, spine=spine)


def stored_events(events: pd.DataFrame, customer_id: str, until: date) -> list[dict]:
    """A learner's stored events before ``until``, as inline events (plain values)."""
    mine = events[
        (events["customer_id"] == customer_id) & (events["ts"] < pd.Timestamp(until, tz="UTC"))
    ]
    return [
        {
            "ts": row.ts.to_pydatetime(),
            "event_type": row.event_type,
            "duration_s": None if pd.isna(row.duration_s) else float(row.duration_s),
            "channel": None if pd.isna(row.channel) else row.channel,
            "item": None if pd.isna(row.item) else row.item,
        }
        for row in mine.itertuples()
    ]


@pytest.fixture(scope="module")
def customers(simulated_log) -> pd.DataFrame:
    return simulated_log.customers


def enrolled_before(customers: pd.DataFrame, day: date, count: int) -> list[str]:
    early = customers[customers["enrolled_at"] < pd.Timestamp(day, tz="UTC")]
    return list(early["customer_id"].iloc[:: max(1, len(early) // count)][:count])


@pytest.mark.parametrize("day", DAYS)
def test_by_id_on_any_day_gives_the_batch_features(data, simulated_log, day, customers):
    # given learners enrolled before a day that is no batch day
    ids = enrolled_before(customers, day, 40)
    # when their features are assembled by id
    features = day_features([LearnerAsk(c, day, NOW) for c in ids], data)
    # then they are the batch job's features of the stored log, from the event store
    expected = batch_rows(simulated_log.events_path, simulated_log.customers, ids, day)
    pd.testing.assert_frame_equal(features.frame, expected, check_exact=False, rtol=1e-9)
    assert set(features.sources.values()) == {"event_store"} and not features.problems


def test_inline_events_are_merged_with_the_stored_ones_without_repeats(
    data, simulated_log, customers
):
    # given learners who send their last stored events again plus new sessions of the day before
    day = DAYS[1]
    ids = enrolled_before(customers, day, 5)
    events = simulated_log.events
    new = [
        {"ts": pd.Timestamp(day, tz="UTC").to_pydatetime() - timedelta(hours=h), "event_type": e}
        for h, e in ((3, "session"), (5, "quiz_attempted"))
    ]
    asks = [
        LearnerAsk(c, day, NOW, events=tuple(stored_events(events, c, day)[-6:] + new)) for c in ids
    ]
    # when their features are assembled from the request
    features = day_features(asks, data)
    # then they are the batch's features of the stored log plus the new events, once each
    added = pd.DataFrame([{"customer_id": c, **event} for c in ids for event in new]).astype(
        {"ts": "datetime64[us, UTC]"}
    )
    merged = pd.concat([events, added], ignore_index=True)
    expected = build_features(
        merged, simulated_log.customers,
        spine=pd.DataFrame({"customer_id": ids, "as_of": pd.Timestamp(day)}),
        type_firsts=event_type_firsts(simulated_log.events_path),
    )  # fmt: skip
    pd.testing.assert_frame_equal(features.frame, expected, check_exact=False, rtol=1e-9)
    assert set(features.sources.values()) == {"inline"} and not features.unstored


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"ts": "2026-05-20T11:00:00", "event_type": "session", "duration_s": -5.0},
         r"events\[1\]\.duration_s: -5 is negative"),
        ({"ts": "yesterday", "event_type": "session"}, r"events\[1\]\.ts: 'yesterday' is not a"),
        ({"ts": "2026-05-20T11:00:00", "event_type": "logged_in"},
         r"events\[1\]\.event_type: 'logged_in' is not a known event type"),
        ({"ts": "2026-07-01T10:00:00", "event_type": "session"}, r"events\[1\]\.ts: .* future"),
        ({"ts": "2026-05-20T11:00:00", "event_type": "session", "channel": "fax"},
         r"events\[1\]\.channel: 'fax'"),
    ],
)  # fmt: skip
def test_inline_data_breaking_the_contracts_names_the_learner_and_field(
    data, event, named, customers
):
    # given a stored learner whose second inline event breaks the contract, and another learner
    good, bad = enrolled_before(customers, DAYS[1], 2)
    fine = {"ts": "2026-05-20T10:00:00", "event_type": "session"}
    asks = [
        LearnerAsk(bad, DAYS[1], NOW, events=(fine, event)),
        LearnerAsk(good, DAYS[1], NOW, events=(fine,)),
    ]
    # when assembled, then the learner gets an Invalid naming the event and field
    features = day_features(asks, data)
    problem = features.problems[bad]
    assert isinstance(problem, Invalid)
    assert problem.message.startswith(f"learner {bad!r}: ")
    assert pd.Series([problem.message]).str.contains(named).all(), problem.message
    # and the other learner is not held back
    assert features.frame["customer_id"].tolist() == [good]


def test_an_event_before_enrolment_and_an_old_enrolment_are_invalid(data):
    record = {"product_tag": "PT_001", "enrolled_at": "2026-04-01T00:00:00Z", "mrr": 9.0}
    early = {"ts": "2026-03-01T10:00:00Z", "event_type": "session"}
    ancient = {"product_tag": "PT_001", "enrolled_at": "0001-01-01T00:00:00Z", "mrr": 9.0}
    asks = [
        LearnerAsk("NEW-1", DAYS[1], NOW, events=(early,), customer=record),
        LearnerAsk("NEW-2", DAYS[1], NOW, events=(), customer=ancient),
    ]
    features = day_features(asks, data)
    assert "events[0].ts" in features.problems["NEW-1"].message
    assert "before the learner's enrolled_at" in features.problems["NEW-1"].message
    assert "customer.enrolled_at before 2000-01-01" in features.problems["NEW-2"].message
    assert features.frame.empty


def test_more_inline_events_than_the_limit_is_too_large(data, customers):
    # given a learner with one event more than the store's limit (50 in this fixture)
    (learner,) = enrolled_before(customers, DAYS[1], 1)
    events = tuple({"ts": "2026-05-20T10:00:00", "event_type": "session"} for _ in range(51))
    features = day_features([LearnerAsk(learner, DAYS[1], NOW, events=events)], data)
    assert isinstance(features.problems[learner], TooLarge)
    assert "51 inline events, more than the 50" in features.problems[learner].message


def test_unknown_learners_are_not_found_and_new_ones_with_a_record_are_unstored(data):
    # given an unknown learner by id, one inline without a record, and one with a record
    record = {"product_tag": "PT_003", "enrolled_at": "2026-05-01T00:00:00Z", "mrr": None}
    session = {"ts": "2026-05-10T09:00:00Z", "event_type": "session", "duration_s": 600.0}
    asks = [
        LearnerAsk("NOBODY-1", DAYS[1], NOW),
        LearnerAsk("NOBODY-2", DAYS[1], NOW, events=(session,)),
        LearnerAsk("NEW-3", DAYS[1], NOW, events=(session,), customer=record),
    ]
    # when assembled
    features = day_features(asks, data)
    # then the unknown are NotFound, the new learner has inline features and is unstored
    assert isinstance(features.problems["NOBODY-1"], NotFound)
    assert "send their customer record" in features.problems["NOBODY-2"].message
    assert features.frame["customer_id"].tolist() == ["NEW-3"]
    assert features.frame.at[0, "sessions_30d"] == 1
    assert features.unstored == frozenset({"NEW-3"})


def test_the_type_availability_is_the_stored_logs_and_survives_a_reopen(simulated_log):
    # given the event store opened once (the index built) and then again (the index reused)
    first = LearnerData.open(simulated_log.events_path.parent)
    again = LearnerData.open(simulated_log.events_path.parent)
    # then both know when each event type first appeared in the whole log, as the batch does
    expected = TypeAvailability.of_firsts(event_type_firsts(simulated_log.events_path))
    assert first.availability == expected == again.availability
    assert len(expected.first_us) > 1 and expected.first_timed_us


def test_a_learner_enrolled_after_the_day_is_invalid(data, customers):
    # given a stored learner asked about a day before their enrolment
    first = customers.sort_values("enrolled_at").iloc[-1]
    day = (first["enrolled_at"] - pd.Timedelta(days=1)).date()
    features = day_features([LearnerAsk(first["customer_id"], day, NOW)], data)
    assert "not before as_of" in features.problems[first["customer_id"]].message


def test_a_read_only_data_directory_keeps_the_index_elsewhere(
    simulated_log, tmp_path, monkeypatch, customers
):
    # given a data directory where the index cannot be written (EROFS, as on a read-only mount)
    opened = []
    real_open = learners.EventIndex.open

    def open_index(events_path, index_root):
        opened.append(index_root)
        if index_root.parent == simulated_log.events_path.parent:
            raise OSError(30, "Read-only file system")
        return real_open(events_path, tmp_path / "elsewhere")

    monkeypatch.setattr(learners.EventIndex, "open", open_index)
    # when the data is opened, then the index lives outside it and learners are still read by id
    data = LearnerData.open(simulated_log.events_path.parent)
    assert len(opened) == 2 and opened[1].parent != simulated_log.events_path.parent
    learner = enrolled_before(customers, DAYS[0], 1)[0]
    assert not day_features([LearnerAsk(learner, DAYS[0], NOW)], data).problems
