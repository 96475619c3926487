"""The online features (numpy, one learner at a time) equal the batch's (DuckDB), nulls included.

``features.windows.build_features`` is the reference: on random small logs (every event type,
null durations, channels and items, events exactly at the window's midnights, cold-start learners,
event types the log has not seen yet) and on the simulator, the online frame must be the batch
frame, column for column and dtype for dtype, floats within 1e-9.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.online import features_frame, learner_features
from features.online_inputs import (
    Customer,
    LearnerEvents,
    TypeAvailability,
    customers_by_id,
    events_by_learner,
    instant_us,
)
from features.simulator import SimulationConfig, simulate
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS, PRODUCT_TAGS
from features.windows import build_features, event_type_firsts
from tests.features.event_frames import customers_frame, events_frame

BASE_DAY = date(2024, 3, 1)
US_PER_DAY = 86_400_000_000
DURATIONS = (None, None, 0.0, 1.0, 30.0, 61.5, 240.0, 1800.0, 3600.25)
"""Binary fractions: sums are exact whatever the order, as the batch's may differ."""


def assert_same_features(online: pd.DataFrame, batch: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        online.reset_index(drop=True),
        batch.reset_index(drop=True),
        check_exact=False,
        rtol=1e-9,
        atol=1e-9,
    )


def online_of(events: pd.DataFrame, customers: pd.DataFrame, ids, as_of, firsts):
    """The online frame of ``ids`` at ``as_of`` from the frames the batch reads."""
    by_learner = events_by_learner(events)
    records = customers_by_id(customers)
    learners = [(records[i], by_learner.get(i, LearnerEvents.empty())) for i in ids]
    return features_frame(learners, as_of, TypeAvailability.of_firsts(firsts))


# --- random logs ----------------------------------------------------------------------------------


@st.composite
def instants(draw, *, low_day: int, high_day: int) -> str:
    """An instant near BASE_DAY: often exactly at a midnight (the windows' boundaries)."""
    day = BASE_DAY + timedelta(days=draw(st.integers(low_day, high_day)))
    at_midnight = draw(st.booleans())
    micros = 0 if at_midnight else draw(st.integers(1, US_PER_DAY - 1))
    moment = pd.Timestamp(day) + pd.Timedelta(microseconds=micros)
    return str(moment)


@st.composite
def logs(draw):
    """(events, customers, spine ids, as_of): up to 4 learners, one outside the spine."""
    learners = draw(st.integers(1, 4))
    ids = [f"L{number}" for number in range(learners)]
    customers = customers_frame(
        [
            [
                customer_id,
                draw(instants(low_day=-90, high_day=10)),
                draw(st.sampled_from(sorted(PRODUCT_TAGS))),
                draw(st.sampled_from([None, 0.0, 19.99, 49.0])),
            ]
            for customer_id in ids
        ]
    )
    event_rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ids),
                instants(low_day=-80, high_day=12),
                st.sampled_from((*CANONICAL_EVENT_TYPES, "other")),
                st.sampled_from(DURATIONS),
                st.sampled_from((None, *CHANNELS)),
                st.sampled_from((None, "f1", "f2", "f3")),
                st.integers(1, 2),  # an exact duplicate row counts twice, as in the batch
            ),
            max_size=60,
        )
    )
    as_of = BASE_DAY + timedelta(days=draw(st.integers(-40, 10)))
    # the last learner, when there are several, only adds to the log's event types
    spine = ids[:-1] if learners > 1 and draw(st.booleans()) else ids
    return events_frame(event_rows), customers, spine, as_of


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(logs())
def test_online_features_equal_the_batch_features_on_random_logs(log):
    # given a small random log and a day
    events, customers, ids, as_of = log
    spine = pd.DataFrame({"customer_id": ids, "as_of": pd.Timestamp(as_of)})
    # when the batch and the online path compute the learners' features at that day
    batch = build_features(events, customers, spine=spine)
    online = online_of(events, customers, ids, as_of, event_type_firsts(events))
    # then they are the same frame: values, nulls and dtypes
    assert_same_features(online, batch)


def test_availability_comes_from_the_log_given_not_the_learners_own_events():
    # given a learner with sessions only, and a larger log that had lessons before the day
    events = events_frame([["A", "2024-03-20 10:00:00", "session", 600.0, "web"]])
    customers = customers_frame([["A", "2024-01-01 00:00:00"]])
    larger = events_frame(
        [
            ["B", "2024-02-01 08:00:00", "lesson_completed"],
            ["B", "2024-02-02 08:00:00", "video_watched"],  # no duration: video minutes unknown
        ]
    )
    firsts = event_type_firsts(pd.concat([events, larger], ignore_index=True))
    spine = pd.DataFrame({"customer_id": ["A"], "as_of": pd.Timestamp("2024-03-25")})
    # when both paths take the larger log's availability
    batch = build_features(events, customers, spine=spine, type_firsts=firsts)
    online = online_of(events, customers, ["A"], date(2024, 3, 25), firsts)
    # then lessons count (0, not null), video minutes stay null, and the paths agree
    assert_same_features(online, batch)
    assert online.at[0, "lessons_30d"] == 0
    assert pd.isna(online.at[0, "video_minutes_30d"])
    assert pd.isna(online.at[0, "milestones_total"])


def test_events_at_and_after_as_of_midnight_are_not_used():
    # given sessions exactly at the day's midnight and after it, and one just before
    customer = Customer("A", "PT_001", instant_us(date(2024, 1, 1)), 49.0)
    events = LearnerEvents.of_records(
        [
            {"ts": pd.Timestamp("2024-03-24 23:59:59.999999"), "event_type": "session"},
            {"ts": pd.Timestamp("2024-03-25 00:00:00"), "event_type": "session"},
            {"ts": pd.Timestamp("2024-03-26 09:00:00"), "event_type": "session"},
        ]
    )
    firsts = TypeAvailability({"session": instant_us(date(2024, 1, 2))}, {})
    # when the features of 2024-03-25 are computed
    row = learner_features(events, customer, date(2024, 3, 25), firsts)
    # then only the event before midnight counts
    assert row["sessions_7d"] == 1
    assert row["days_since_last_session"] == pytest.approx(1e-6 / 86_400)


def test_merging_drops_exact_duplicates_only_of_the_added_events():
    # given stored events (one repeated, as a log may hold) and inline ones repeating them
    stored = LearnerEvents.of_records(
        [
            {"ts": pd.Timestamp("2024-03-20 10:00"), "event_type": "session", "duration_s": 60.0},
            {"ts": pd.Timestamp("2024-03-20 10:00"), "event_type": "session", "duration_s": 60.0},
        ]
    )
    inline = LearnerEvents.of_records(
        [
            {"ts": pd.Timestamp("2024-03-20 10:00"), "event_type": "session", "duration_s": 60.0},
            {"ts": pd.Timestamp("2024-03-20 10:00"), "event_type": "session", "duration_s": 61.0},
            {"ts": pd.Timestamp("2024-03-19 10:00"), "event_type": "quiz_passed"},
            {"ts": pd.Timestamp("2024-03-19 10:00"), "event_type": "quiz_passed"},
        ]
    )
    # when merged
    merged = stored.merged(inline)
    # then the stored pair stays, the other duration and one quiz are added, in time order
    assert len(merged) == 4
    assert np.all(np.diff(merged.ts_us) >= 0)
    assert sorted(np.nan_to_num(merged.duration_s).tolist()) == [0.0, 60.0, 60.0, 61.0]


# --- the simulator --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("online-sim")
    simulate(SimulationConfig(customers=3000, days=100, seed=11, truth_share=0.0), out)
    return pd.read_parquet(out / "events.parquet"), pd.read_parquet(out / "customers.parquet")


def test_online_features_equal_the_batch_features_on_the_simulator(simulated):
    # given thousands of simulated learners and a few days, cold starts and churned included
    events, customers = simulated
    days = [date(2026, 1, 20), date(2026, 3, 1), date(2026, 4, 11)]
    batch = build_features(events, customers, as_of=days)
    firsts = event_type_firsts(events)
    by_learner = events_by_learner(events)
    records = customers_by_id(customers)
    availability = TypeAvailability.of_firsts(firsts)
    assert len(batch) > 3000
    for day in days:
        expected = batch[batch["as_of"] == pd.Timestamp(day)]
        ids = expected["customer_id"].tolist()
        # when the online path computes the same learners on that day
        online = features_frame(
            [(records[i], by_learner.get(i, LearnerEvents.empty())) for i in ids],
            day,
            availability,
        )
        # then every feature of every learner is the batch's
        assert_same_features(online, expected)
