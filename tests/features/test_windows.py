"""Tests for features/windows.py: hand-computed values, point-in-time correctness, degradation.

They go through the public API, so they also cover the SQL it runs (features/window_sql.py) and
the workspace that runs it (features/workspace.py): neither has behaviour worth testing apart.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.catalog import FeatureCatalog, FeatureSpec, load_catalog
from features.schemas import feature_frame_schema
from features.vocabulary import CANONICAL_EVENT_TYPES
from features.windows import (
    SPINE_SCHEMA,
    build_features,
    check_catalog_coverage,
    eligible_spine,
    event_type_firsts,
    feature_day,
    feature_dtypes,
    normalize_spine,
    observation_dates,
    read_features,
    write_features,
)
from features.workspace import Workspace, workspace
from tests.features.event_frames import customers_frame, events_frame, utc

CASES = yaml.safe_load((Path(__file__).parent / "window_cases.yaml").read_text())["cases"]
CATALOG = load_catalog()
T = date(2024, 4, 1)
T_MIDNIGHT = pd.Timestamp("2024-04-01")


def features_of(frame: pd.DataFrame, customer_id: str) -> pd.Series:
    """The one feature row of ``customer_id``."""
    rows = frame[frame["customer_id"] == customer_id]
    assert len(rows) == 1, f"expected one row for {customer_id}, got {len(rows)}"
    return rows.iloc[0]


def assert_feature(actual: object, expected: object, where: str) -> None:
    """Compare one value: None means missing; bools exactly; numbers to 1e-12."""
    if expected is None:
        assert pd.isna(actual), f"{where}: expected null, got {actual!r}"
    elif isinstance(expected, bool):
        assert isinstance(actual, bool | np.bool_), f"{where}: {actual!r} is not a bool"
        assert bool(actual) is expected, f"{where}: expected {expected}, got {actual}"
    elif isinstance(expected, str):
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"
    else:
        assert not pd.isna(actual), f"{where}: expected {expected}, got null"
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12), where


# --- hand-computed values ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_hand_computed_values(case):
    # given a tiny log whose feature values were worked out by hand
    events = events_frame(case["events"])
    customers = customers_frame(case["customers"])

    # when (at as_of: the learners eligible then; with all_learners: every learner, eligible or not)
    if case.get("all_learners"):
        spine = customers[["customer_id"]].assign(as_of=pd.Timestamp(case["as_of"]))
        frame = build_features(events, customers, spine=spine)
    else:
        frame = build_features(events, customers, as_of=[case["as_of"]])

    # then
    for customer_id, expected in case["expect"].items():
        row = features_of(frame, customer_id)
        for feature, value in expected.items():
            assert_feature(row[feature], value, f"{case['name']} / {customer_id} / {feature}")


def test_the_hand_computed_cases_cover_every_feature_and_both_values_of_every_flag():
    # given the expectations of all cases
    expected = [
        (feature, value)
        for case in CASES
        for learner in case["expect"].values()
        for feature, value in learner.items()
    ]

    # then every catalog feature has a hand-computed value, every flag a true and a false one
    assert set(CATALOG.names) - {feature for feature, _ in expected} == set()
    for flag in CATALOG.risk_indicators:
        seen = {value for feature, value in expected if feature == flag}
        assert seen == {True, False}, flag


# --- output shape ---------------------------------------------------------------------------


def test_columns_follow_the_catalog_with_its_dtypes():
    # given
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0, "web"]])
    customers = customers_frame([["a"]])

    # when
    frame = build_features(events, customers, as_of=[T])

    # then
    assert list(frame.columns) == ["customer_id", "as_of", *CATALOG.names]
    assert frame["as_of"].dtype == np.dtype("datetime64[us]")
    assert frame["as_of"].tolist() == [T_MIDNIGHT]
    assert {name: str(frame[name].dtype) for name in CATALOG.names} == feature_dtypes()
    feature_frame_schema().validate(frame)


def test_feature_dtypes_make_only_type_dependent_counts_nullable():
    # when
    dtypes = feature_dtypes()

    # then
    assert dtypes["events_7d"] == "int64"
    assert dtypes["lessons_7d"] == "Int64"
    assert dtypes["mrr"] == "float64"
    assert dtypes["risk_inactive_7d"] == "bool"
    assert dtypes["product_tag"] == "str"


# --- point-in-time correctness ------------------------------------------------------------------

AS_OF = pd.Timestamp("2024-03-01", tz="UTC")
MICROSECOND = pd.Timedelta(microseconds=1)
# offsets from a date t that sit on the edges of the windows and of t itself, and inside day t
EDGE_OFFSETS = [
    pd.Timedelta(0),
    -MICROSECOND,
    MICROSECOND,
    pd.Timedelta(hours=12),
    pd.Timedelta(days=-7),
    pd.Timedelta(days=-30),
    pd.Timedelta(days=-30) - MICROSECOND,
    pd.Timedelta(days=1),
]
offsets = st.one_of(
    st.sampled_from(EDGE_OFFSETS),
    st.integers(min_value=-45 * 86_400, max_value=20 * 86_400).map(
        lambda seconds: pd.Timedelta(seconds=seconds)
    ),
)
# an event: learner, which of the as_of dates its offset is taken from, offset, then the contract
event_rows = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.integers(min_value=0, max_value=3),
    offsets,
    st.sampled_from(CANONICAL_EVENT_TYPES),
    st.one_of(st.none(), st.floats(min_value=0, max_value=7200)),
    st.sampled_from([None, "web", "mobile"]),
    st.sampled_from([None, "notes", "planner"]),
)


def _log_around(dates: list[pd.Timestamp], rows: list, enrolled_days_before: list[int]):
    """Events placed at offsets from the drawn dates, and learners enrolled before the first."""
    events = events_frame(
        [
            [cid, str(dates[which % len(dates)] + offset), *rest]
            for cid, which, offset, *rest in rows
        ]
    )
    customers = customers_frame(
        [
            [cid, str(dates[0] - pd.Timedelta(days=days))]
            for cid, days in zip("abc", enrolled_days_before, strict=True)
        ]
    )
    return events, customers


# Several dates in ONE call: the SQL joins every event to every window, so a leak that only shows
# when a later date's events are in the same query (day t counted for an earlier t) needs them.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(  # an event exactly at t, of a type the log has not seen before t
    rows=[
        ("a", 0, pd.Timedelta(0), "lesson_completed", None, "web", None),
        ("a", 0, pd.Timedelta(days=-7), "session", 60.0, "web", None),
    ],
    enrolled_days_before=[40, 40, 40],
    day_offsets=[0],
)
@example(  # the first of two dates' own day, with a type first seen exactly at it
    rows=[
        ("a", 0, pd.Timedelta(0), "lesson_completed", None, "web", None),
        ("a", 0, pd.Timedelta(hours=12), "session", 60.0, "web", None),
        ("a", 0, pd.Timedelta(days=-3), "session", 60.0, "web", None),
    ],
    enrolled_days_before=[40, 40, 40],
    day_offsets=[0, 7],
)
@given(
    rows=st.lists(event_rows, min_size=0, max_size=14),
    enrolled_days_before=st.lists(st.integers(min_value=-3, max_value=60), min_size=3, max_size=3),
    day_offsets=st.lists(
        st.integers(min_value=0, max_value=40), min_size=1, max_size=4, unique=True
    ),
)
def test_features_at_each_t_ignore_events_at_or_after_it(rows, enrolled_days_before, day_offsets):
    # given a random small log around one to four dates t
    dates = sorted(AS_OF + pd.Timedelta(days=days) for days in day_offsets)
    events, customers = _log_around(dates, rows, enrolled_days_before)

    # when the features at every date are built in one call on the whole log
    together = build_features(events, customers, as_of=[t.date() for t in dates])

    # then the rows of each t are those built from the events before t alone
    for t in dates:
        past_only = build_features(events[events["ts"] < t], customers, as_of=[t.date()])
        at_t = together[together["as_of"] == t.tz_localize(None)].reset_index(drop=True)
        pd.testing.assert_frame_equal(at_t, past_only, obj=f"features at {t.date()}")


def test_several_dates_at_once_equal_one_date_at_a_time():
    # given lessons and sessions spread over two months
    events = events_frame(
        [
            ["a", "2024-01-20 10:00:00", "lesson_completed", None, "web", "L01"],
            ["a", "2024-02-05 10:00:00", "milestone_completed", None, "web", "M01"],
            ["a", "2024-02-25 10:00:00", "session", 600.0, "web"],
            ["a", "2024-03-20 10:00:00", "lesson_completed", None, "mobile", "L02"],
            ["b", "2024-03-10 10:00:00", "session", 300.0, "mobile"],
        ]
    )
    customers = customers_frame([["a"], ["b", "2024-02-01 00:00:00"]])
    dates = [date(2024, 2, 1), date(2024, 3, 1), date(2024, 4, 1)]

    # when
    together = build_features(events, customers, as_of=dates)
    one_by_one = pd.concat(
        [build_features(events, customers, as_of=[day]) for day in dates], ignore_index=True
    )

    # then
    pd.testing.assert_frame_equal(together, one_by_one)
    assert together.groupby("as_of")["customer_id"].apply(list).to_dict() == {
        pd.Timestamp("2024-02-01"): ["a"],
        pd.Timestamp("2024-03-01"): ["a", "b"],
        pd.Timestamp("2024-04-01"): ["a", "b"],
    }
    assert features_of(together[together["as_of"] == "2024-04-01"], "a")["lessons_total"] == 2


# --- graceful degradation ----------------------------------------------------------------------


def test_a_log_of_sessions_only_nulls_the_features_that_need_other_types():
    # given a log with nothing but sessions
    events = events_frame(
        [
            ["a", "2024-03-10 09:00:00", "session", 600.0, "web"],
            ["a", "2024-03-30 09:00:00", "session", 1200.0, "mobile"],
        ]
    )
    customers = customers_frame([["a"]])

    # when
    row = features_of(build_features(events, customers, as_of=[T]), "a")

    # then features needing other types are null (numbers) or false (flags)...
    absent = [spec for spec in CATALOG.features if spec.needs and "session" not in spec.needs]
    assert {spec.name for spec in absent} >= {"lessons_7d", "lessons_total", "risk_no_lesson_14d"}
    for spec in absent:
        if spec.dtype == "bool":
            assert row[spec.name] is np.False_ or row[spec.name] is False, spec.name
        else:
            assert pd.isna(row[spec.name]), spec.name
    # ...while generic and session features work
    assert row["events_30d"] == 2
    assert row["sessions_7d"] == 1
    assert row["session_minutes_30d"] == pytest.approx(30.0)
    assert row["mobile_share_30d"] == pytest.approx(0.5)
    assert row["days_since_last_event"] == pytest.approx(1 + 15 / 24)


def test_an_event_type_counts_as_seen_only_from_the_first_date_after_it():
    # given the first lesson of the whole log on 2024-03-15
    events = events_frame(
        [
            ["a", "2024-03-10 09:00:00", "session", 600.0, "web"],
            ["a", "2024-03-15 09:00:00", "lesson_completed", None, "web", "L01"],
        ]
    )
    customers = customers_frame([["a"]])

    # when
    frame = build_features(events, customers, as_of=[date(2024, 3, 15), date(2024, 3, 16)])

    # then on the 15th lessons are unknown, on the 16th they are counted
    before, after = frame["lessons_total"].tolist()
    assert pd.isna(before)
    assert after == 1


def test_one_learners_events_with_the_logs_type_firsts_give_the_whole_logs_features():
    # given a log where only learner b ever took a quiz or timed a session
    events = events_frame(
        [
            ["a", "2024-03-10 09:00:00", "session", None, "web"],
            ["a", "2024-03-28 09:00:00", "lesson_completed", None, "web", "L01"],
            ["b", "2024-03-05 09:00:00", "session", 900.0, "mobile"],
            ["b", "2024-03-06 09:00:00", "quiz_attempted", None, "mobile"],
        ]
    )
    customers = customers_frame([["a"], ["b"]])
    spine = pd.DataFrame({"customer_id": ["a"], "as_of": [T_MIDNIGHT]})
    whole_log = build_features(events, customers, spine=spine)
    a_events = events[events["customer_id"] == "a"]
    # when a's features come from a's events alone, with and without the log's availability
    alone = build_features(a_events, customers, spine=spine)
    with_firsts = build_features(
        a_events, customers, spine=spine, type_firsts=event_type_firsts(events)
    )
    # then alone, quiz and time features are unknown; with the log's firsts they are the log's
    assert pd.isna(alone["quiz_attempts_30d"].iloc[0]) and pd.isna(
        alone["session_minutes_30d"].iloc[0]
    )
    assert with_firsts["quiz_attempts_30d"].iloc[0] == 0
    pd.testing.assert_frame_equal(with_firsts, whole_log)


def test_type_firsts_give_each_types_first_event_and_first_timed_event():
    # given sessions, the first without a duration, and a lesson never timed
    events = events_frame(
        [
            ["a", "2024-03-10 09:00:00", "session", None, "web"],
            ["b", "2024-03-12 09:00:00", "session", 60.0, "web"],
            ["a", "2024-03-11 09:00:00", "lesson_completed", None, "web", "L01"],
        ]
    )
    # when
    firsts = event_type_firsts(events).set_index("event_type")
    # then
    assert firsts.at["session", "first_ts"] == pd.Timestamp("2024-03-10 09:00", tz="UTC")
    assert firsts.at["session", "first_timed_ts"] == pd.Timestamp("2024-03-12 09:00", tz="UTC")
    assert pd.isna(firsts.at["lesson_completed", "first_timed_ts"])


def test_durations_missing_from_the_whole_log_null_the_time_features():
    # given sessions that never carry a duration
    events = events_frame(
        [
            ["a", "2024-03-10 09:00:00", "session", None, "web"],
            ["a", "2024-03-30 09:00:00", "session", None, "web"],
        ]
    )
    customers = customers_frame([["a"]])

    # when
    row = features_of(build_features(events, customers, as_of=[T]), "a")

    # then
    timed = [spec.name for spec in CATALOG.features if spec.needs_duration]
    assert "session_minutes_7d" in timed
    for name in timed:
        expected_missing = False if CATALOG.get(name).dtype == "bool" else None
        assert_feature(row[name], expected_missing, name)
    assert row["sessions_30d"] == 2


def test_a_learner_whose_sessions_lack_durations_gets_null_time_while_others_do_not():
    # given durations in the log, but none on learner a's sessions of the last 7 days
    events = events_frame(
        [
            ["a", "2024-03-10 09:00:00", "session", 600.0, "web"],
            ["a", "2024-03-30 09:00:00", "session", None, "web"],
            ["b", "2024-03-30 09:00:00", "session", 300.0, "web"],
        ]
    )
    customers = customers_frame([["a"], ["b"]])

    # when
    frame = build_features(events, customers, as_of=[T])
    a, b = features_of(frame, "a"), features_of(frame, "b")

    # then a's 7-day time is unknown (not a fake 0-minute drop), its 30-day time is the known part
    assert pd.isna(a["session_minutes_7d"])
    assert pd.isna(a["minutes_trend_7v23"])
    assert not a["risk_session_time_drop"]
    assert a["session_minutes_30d"] == pytest.approx(10.0)
    assert a["avg_session_minutes_30d"] == pytest.approx(10.0)
    assert b["session_minutes_7d"] == pytest.approx(5.0)
    assert b["minutes_trend_7v23"] == pytest.approx(1.0)


# --- eligibility ---------------------------------------------------------------------------------


def test_eligibility_needs_enrolment_before_t_and_recent_activity_or_a_recent_start():
    # given learners around every edge of the rule
    customers = customers_frame(
        [
            ["active"],
            ["silent"],
            ["edge_active"],
            ["new", "2024-03-29 00:00:00"],
            ["enrolled_at_t", "2024-04-01 00:00:00"],
            ["enrolled_after", "2024-04-05 00:00:00"],
        ]
    )
    events = events_frame(
        [
            ["active", "2024-03-31 23:59:59.999999", "session", 60.0],
            ["silent", "2024-03-01 23:59:59.999999", "session", 60.0],  # t-30d-1us
            ["edge_active", "2024-03-02 00:00:00", "session", 60.0],  # t-30d
            ["enrolled_after", "2024-03-30 00:00:00", "session", 60.0],
        ]
    )

    # when
    spine = eligible_spine(events, customers, [T])
    frame = build_features(events, customers, as_of=[T])

    # then
    assert spine["customer_id"].tolist() == ["active", "edge_active", "new"]
    assert spine["as_of"].tolist() == [T_MIDNIGHT] * 3
    pd.testing.assert_frame_equal(frame[["customer_id", "as_of"]], spine)


def day_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two active learners, one silent for 40 days (live-tagged in a batch), one new."""
    customers = customers_frame([["active"], ["busy"], ["silent"], ["new", "2024-03-29 00:00:00"]])
    events = events_frame(
        [
            ["active", "2024-03-31 10:00:00", "session", 60.0],
            ["busy", "2024-03-20 10:00:00", "lesson_completed", None],
            ["busy", "2024-02-01 10:00:00", "milestone_completed", None],
            ["silent", "2024-02-20 10:00:00", "session", 30.0],
        ]
    )
    return events, customers


def test_feature_day_gives_what_eligible_spine_and_build_features_give_apart():
    # given a day's log and a spine of its eligible learners plus a live but silent one
    events, customers = day_log()

    # when the day's learners and features come from one feature_day
    with feature_day(events, customers, T) as day:
        eligible = day.eligible()
        spine = pd.concat([eligible, pd.DataFrame({"customer_id": ["silent"], "as_of": [T]})])
        features = day.features(spine.sort_values("customer_id", ignore_index=True))

    # then they are the separate calls' frames, exactly
    pd.testing.assert_frame_equal(eligible, eligible_spine(events, customers, [T]))
    expected = build_features(
        events, customers, spine=spine.sort_values("customer_id", ignore_index=True)
    )
    pd.testing.assert_frame_equal(features, expected, check_exact=True)
    assert features["customer_id"].tolist() == ["active", "busy", "new", "silent"]
    assert features_of(features, "busy")["milestones_total"] == 1


def test_feature_day_refuses_a_spine_pair_of_another_day():
    # given a day's log
    events, customers = day_log()

    # when a spine pair is at another day, then it is refused, naming the day
    with feature_day(events, customers, T) as day:
        other = pd.DataFrame({"customer_id": ["active"], "as_of": [T + timedelta(days=1)]})
        with pytest.raises(ValueError, match="1 rows are not at 2024-04-01"):
            day.features(other)


def test_observation_dates_run_every_n_days_up_to_and_including_the_end():
    # when / then
    assert observation_dates(date(2024, 1, 1), date(2024, 1, 15), 7) == [
        date(2024, 1, 1),
        date(2024, 1, 8),
        date(2024, 1, 15),
    ]
    assert observation_dates(date(2024, 1, 1), date(2024, 1, 14), 7) == [
        date(2024, 1, 1),
        date(2024, 1, 8),
    ]
    with pytest.raises(ValueError, match="every_days"):
        observation_dates(date(2024, 1, 1), date(2024, 1, 14), 0)
    with pytest.raises(ValueError, match="before start"):
        observation_dates(date(2024, 1, 2), date(2024, 1, 1), 7)


def test_one_day_apart_and_a_one_day_range_are_the_smallest_schedules():
    # when / then daily dates are allowed, and a range of one day gives that day
    assert observation_dates(date(2024, 1, 1), date(2024, 1, 3), 1) == [
        date(2024, 1, 1),
        date(2024, 1, 2),
        date(2024, 1, 3),
    ]
    assert observation_dates(date(2024, 1, 1), date(2024, 1, 1), 7) == [date(2024, 1, 1)]


# --- spine mode and inputs ----------------------------------------------------------------------


def test_spine_mode_computes_exactly_the_given_pairs_in_their_order():
    # given a spine with a silent learner (not eligible) and two dates, unsorted, plus a label
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0, "web"]])
    customers = customers_frame([["a"], ["silent"]])
    spine = pd.DataFrame(
        {
            "customer_id": ["silent", "a", "a"],
            "as_of": [T, T, date(2024, 3, 31)],
            "churned": [1, 0, 0],
        }
    )

    # when
    frame = build_features(events, customers, spine=spine)
    eligible = build_features(events, customers, as_of=[T])

    # then
    assert frame["customer_id"].tolist() == ["silent", "a", "a"]
    pd.testing.assert_frame_equal(frame.iloc[[1]].reset_index(drop=True), eligible)
    assert frame["as_of"].tolist() == [T_MIDNIGHT, T_MIDNIGHT, pd.Timestamp("2024-03-31")]
    assert frame["events_30d"].tolist() == [0, 1, 1]
    assert frame["days_since_last_event"].iloc[0] == pytest.approx(91.0)


@pytest.mark.parametrize(
    ("spine", "message"),
    [
        (pd.DataFrame({"customer_id": ["a"]}), "missing columns"),
        (pd.DataFrame({"customer_id": ["a"], "as_of": ["2024-04-01 06:00"]}), "not at midnight"),
        (pd.DataFrame({"customer_id": ["a", "a"], "as_of": [T, T]}), "2 rows repeat"),
        (pd.DataFrame({"customer_id": [None], "as_of": [T]}), "1 rows are null"),
    ],
)
def test_a_bad_spine_is_refused_with_the_reason(spine, message):
    # given
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0]])
    customers = customers_frame([["a"]])

    # when / then
    with pytest.raises(ValueError, match=message):
        build_features(events, customers, spine=spine)


def test_spine_learners_missing_from_customers_are_named():
    # given
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0]])
    customers = customers_frame([["a"]])
    spine = pd.DataFrame({"customer_id": ["a", "ghost"], "as_of": [T, T]})

    # when / then
    with pytest.raises(ValueError, match=r"1 rows name learners missing from customers.*ghost"):
        build_features(events, customers, spine=spine)


def test_exactly_one_of_as_of_and_spine_is_required():
    # given
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0]])
    customers = customers_frame([["a"]])
    spine = pd.DataFrame({"customer_id": ["a"], "as_of": [T]})

    # when / then
    with pytest.raises(ValueError, match="exactly one of as_of"):
        build_features(events, customers)
    with pytest.raises(ValueError, match="exactly one of as_of"):
        build_features(events, customers, as_of=[T], spine=spine)
    with pytest.raises(ValueError, match="at least one date"):
        build_features(events, customers, as_of=[])


def test_parquet_paths_and_frames_give_the_same_features(tmp_path):
    # given the same inputs as frames and as parquet files
    events = events_frame(
        [
            ["a", "2024-03-10 09:00:00", "session", 600.0, "web"],
            ["a", "2024-03-30 09:00:00", "feature_used", None, "mobile", "notes"],
            ["b", "2024-03-31 23:00:00", "lesson_completed", None, None, "L01"],
        ]
    )
    customers = customers_frame([["a"], ["b", "2024-03-20 00:00:00", "PT_003", None]])
    events.to_parquet(tmp_path / "events.parquet")
    customers.to_parquet(tmp_path / "customers.parquet")

    # when
    from_frames = build_features(events, customers, as_of=[T])
    from_paths = build_features(
        tmp_path / "events.parquet", str(tmp_path / "customers.parquet"), as_of=[T]
    )

    # then
    assert len(from_frames) == 2
    pd.testing.assert_frame_equal(from_frames, from_paths)


def test_inputs_that_are_not_parquet_or_lack_columns_are_refused(tmp_path):
    # given
    customers = customers_frame([["a"]])
    (tmp_path / "events.csv").write_text("customer_id\n")

    # when / then
    with pytest.raises(ValueError, match=r"events: expected a parquet file, got events.csv"):
        build_features(tmp_path / "events.csv", customers, as_of=[T])
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        build_features(tmp_path / "nope.parquet", customers, as_of=[T])
    no_item = events_frame([["a", "2024-03-30 09:00:00", "session"]]).drop(columns="item")
    with pytest.raises(ValueError, match=r"events: missing columns \['item'\]"):
        build_features(no_item, customers, as_of=[T])


def test_a_given_connection_is_left_without_temporary_objects():
    # given
    con = duckdb.connect()
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0]])
    customers = customers_frame([["a"]])

    # when
    frame = build_features(events, customers, as_of=[T], con=con)

    # then
    assert len(frame) == 1
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    assert con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE temporary AND NOT internal"
    ).fetchall() == [(0,)]


def test_as_of_accepts_dates_midnight_datetimes_and_utc_timestamps_alike():
    # given
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0]])
    customers = customers_frame([["a"]])

    # when
    frames = [
        build_features(events, customers, as_of=[value])
        for value in (T, datetime(2024, 4, 1), pd.Timestamp("2024-04-01 02:00", tz="Europe/Paris"))
    ]

    # then
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])


def test_an_empty_spine_gives_an_empty_frame_with_the_catalog_columns():
    # given
    events = events_frame([["a", "2024-03-30 09:00:00", "session", 600.0]])
    customers = customers_frame([["a"]])
    spine = pd.DataFrame(
        {"customer_id": pd.Series(dtype="str"), "as_of": pd.Series(dtype="M8[us]")}
    )

    # when
    frame = build_features(events, customers, spine=spine)

    # then
    assert frame.empty
    assert list(frame.columns) == ["customer_id", "as_of", *CATALOG.names]


def test_written_features_read_back_identical(tmp_path):
    # given
    events = events_frame([["a", "2024-03-30 09:00:00", "lesson_completed", None, "web", "L1"]])
    frame = build_features(events, customers_frame([["a"]]), as_of=[T])

    # when
    path = write_features(frame, tmp_path / "out" / "features.parquet")

    # then
    pd.testing.assert_frame_equal(read_features(path), frame)


def test_a_catalog_feature_without_sql_is_reported_by_name():
    # given the packaged catalog plus one feature nobody implemented
    extra = FeatureSpec(
        name="naps_30d", label="naps", description="naps", unit="count", dtype="int", group="time"
    )
    catalog = FeatureCatalog(features=(*CATALOG.features, extra))

    # when / then
    with pytest.raises(ValueError, match=r"without SQL \['naps_30d'\]"):
        check_catalog_coverage(catalog)
    check_catalog_coverage(CATALOG)


def test_days_before_t_are_whole_utc_days():
    # given an event one microsecond before t and one a day and a microsecond before
    events = events_frame(
        [
            ["a", str(utc("2024-04-01") - timedelta(microseconds=1)), "session", 60.0],
            ["a", str(utc("2024-03-31") - timedelta(microseconds=1)), "session", 60.0],
        ]
    )

    # when
    row = features_of(build_features(events, customers_frame([["a"]]), as_of=[T]), "a")

    # then both are in the last 7 days, on two different days
    assert row["events_7d"] == 2
    assert row["active_days_7d"] == 2
    assert row["days_since_last_event"] == pytest.approx(1 / 86_400_000_000)


def test_a_spine_error_names_the_spine_column_and_three_examples():
    # given an off-midnight as_of, and four rows repeating two pairs
    off_midnight = pd.DataFrame({"customer_id": ["a"], "as_of": ["2024-04-01 06:00"]})
    repeated = pd.DataFrame({"customer_id": ["a", "a", "b", "b"], "as_of": [T] * 4})

    # when / then the source and its column are named, and at most three pairs are shown
    with pytest.raises(ValueError, match=r"^spine: column as_of: 1 values are not at midnight"):
        build_features(events_frame([]), customers_frame([["a"]]), spine=off_midnight)
    with pytest.raises(ValueError) as raised:
        build_features(events_frame([]), customers_frame([["a"], ["b"]]), spine=repeated)
    message = str(raised.value)
    assert message.startswith("spine: 4 rows repeat a (customer_id, as_of) pair, e.g. [")
    assert message.count("'customer_id'") == 3


def test_features_are_written_into_new_folders_and_over_an_earlier_file(tmp_path):
    # given a feature frame, and a path two folders deep that does not exist yet
    events = events_frame([["a", "2024-03-20 10:00:00", "session", 60.0]])
    frame = build_features(events, customers_frame([["a"]]), as_of=[T])
    target = tmp_path / "new" / "deeper" / "features.parquet"

    # when it is written there twice
    write_features(frame, target)
    write_features(frame, target)

    # then the file reads back as the frame, with no index column added
    assert len(frame) == 1
    pd.testing.assert_frame_equal(read_features(target), frame)
    assert list(pd.read_parquet(target).columns) == list(frame.columns)


# --- the batch-scale shortcuts: each gives what the long way gives ------------------------------


def _mixed_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six learners with sessions, lessons, feature use and history before the windows."""
    rows = []
    for index, learner in enumerate("abcdef"):
        rows += [
            [learner, f"2024-01-{10 + index} 08:00:00", "lesson_completed", None, "web", "L1"],
            [learner, f"2024-03-{10 + index} 09:00:00", "session", 60.0 * (index + 1), "mobile"],
            [learner, f"2024-03-{20 + index} 10:00:00", "feature_used", None, None, f"F{index}"],
            [learner, f"2024-03-{25 + index} 11:00:00", "milestone_completed", None, "web", "M"],
        ]
    customers = customers_frame([[learner] for learner in "abcdefgh"])
    return events_frame(rows), customers


@pytest.mark.parametrize("learners", [["b"], ["a", "c", "g"], list("abcdefgh")])
def test_the_spine_learner_filter_changes_which_events_are_read_never_the_features(
    monkeypatch, learners
):
    # given a spine at two dates, in no particular order, with learners without events ("g", "h")
    events, customers = _mixed_log()
    spine = pd.DataFrame(
        {
            "customer_id": learners[::-1] + learners,
            "as_of": [T] * len(learners) + [date(2024, 3, 28)] * len(learners),
        }
    )

    # when the learners' events are read through the filter, and without it
    frames = {}
    for filtered in (True, False):
        monkeypatch.setattr(Workspace, "_worth_filtering", lambda *_, on=filtered: on)
        frames[filtered] = build_features(events, customers, spine=spine)

    # then
    pd.testing.assert_frame_equal(frames[True], frames[False], check_exact=True)
    assert frames[True]["customer_id"].tolist() == spine["customer_id"].tolist()
    assert frames[True]["lessons_total"].sum() == len(
        [x for x in spine.customer_id if x not in "gh"]
    )


@pytest.mark.parametrize(
    ("learners", "dates", "given_dates", "worth"),
    [
        (4, 1, 1, True),  # a few learners of 10
        (5, 1, 1, False),  # half of them: the filter probes every event for little
        (4, 3, 3, True),  # 12 pairs, 4 learners: counted, a minority
        (6, 2, 3, False),  # 12 pairs over 3 dates could be 4 learners: counted, 6
        (10, 3, 3, False),  # 30 pairs over 3 dates are at least 10 learners: not counted
    ],
)
def test_the_spine_filter_is_used_only_for_a_minority_of_the_customers(
    learners, dates, given_dates, worth
):
    # given 10 customers and a spine of `learners` at `dates` dates
    customers = customers_frame([[f"c{i}"] for i in range(10)])
    pairs = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(learners)] * dates,
            "as_of": [
                d for d in pd.date_range("2024-04-01", periods=dates) for _ in range(learners)
            ],
        }
    )
    with workspace() as ws:
        ws.register_inputs(events_frame([]), customers)

        # when / then
        assert ws._worth_filtering(pairs, given_dates) is worth
        assert ws._worth_filtering(object(), given_dates) is True  # an engine's own frame


def test_feature_rows_come_in_row_id_order_whatever_order_the_query_returns(monkeypatch):
    # given a query whose rows come out of row_id order
    shuffled = pd.DataFrame({"row_id": [2, 0, 3, 1], "value": [20, 0, 30, 10]})
    monkeypatch.setattr(Workspace, "features_sql", lambda *_, **__: "SELECT * FROM shuffled")
    with workspace() as ws:
        ws.con.register("shuffled", shuffled)

        # when
        rows = ws.features(shuffled, "", CATALOG)

    # then
    assert rows["row_id"].tolist() == [0, 1, 2, 3]
    assert rows["value"].tolist() == [0, 10, 20, 30]


@pytest.mark.parametrize(
    "spine",
    [
        pd.DataFrame(
            {"customer_id": pd.Series([], dtype="str"), "as_of": pd.Series([], dtype="M8[us]")}
        ),
        pd.DataFrame({"customer_id": [3, 1], "as_of": pd.to_datetime(["2024-04-01"] * 2)}),
        pd.DataFrame(
            {"customer_id": ["a"], "as_of": pd.to_datetime(["2024-04-01"]).tz_localize("UTC")},
            index=[7],
        ),
    ],
    ids=["empty", "int ids", "utc timestamps"],
)
def test_a_normalized_spine_is_what_the_spine_schema_would_make_of_it(spine):
    # when (normalize_spine checks what SPINE_SCHEMA checks, and no longer re-runs it)
    pairs = normalize_spine(spine)

    # then
    pd.testing.assert_frame_equal(pairs, SPINE_SCHEMA.validate(pairs.copy()), check_exact=True)
    assert pairs.dtypes.astype(str).tolist() == ["str", "datetime64[us]"]
    assert pairs.index.tolist() == list(range(len(spine)))


def every_kind_of_event(customer_id: str, day: str) -> list[list]:
    """One event of each canonical type on ``day``, sessions and videos with a duration."""
    timed = {"session": 600.0, "video_watched": 300.0}
    return [
        [customer_id, f"{day} 09:00:00", event_type, timed.get(event_type), "web", "F1"]
        for event_type in sorted(CANONICAL_EVENT_TYPES)
    ]


def test_a_log_with_every_type_before_the_first_date_skips_the_type_firsts(monkeypatch):
    # Given a log whose every event type (sessions and videos timed) comes before the first
    # as_of, and learner b's events after it
    events = events_frame(
        [
            *every_kind_of_event("a", "2024-03-05"),
            ["b", "2024-03-20 09:00:00", "session", None, "web"],
            ["b", "2024-04-02 09:00:00", "quiz_attempted", None, "web"],
        ]
    )
    customers = customers_frame([["a"], ["b"]])
    created: list[str] = []
    create = Workspace.create

    def recorded(self, kind, role, template, **parts):
        created.append(role)
        return create(self, kind, role, template, **parts)

    monkeypatch.setattr(Workspace, "create", recorded)
    dates = [date(2024, 3, 25), T]
    # When the features are built from the log, and with its type firsts given
    frame = build_features(events, customers, as_of=dates)
    given = build_features(events, customers, as_of=dates, type_firsts=event_type_firsts(events))
    # Then the first of each type was never computed over the log, and the features are those
    # the firsts give: every type available on both days
    assert "type_firsts" not in created
    pd.testing.assert_frame_equal(frame, given, check_exact=True)
    assert frame["quiz_attempts_30d"].notna().all() and frame["lessons_total"].notna().all()
