"""Tests for features/labels.py: label windows, cancellations, incomplete windows, BYO labels."""

from __future__ import annotations

import logging
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from features.labels import compute_labels, load_labels
from tests.features.event_frames import events_frame

T = date(2024, 3, 1)
T_MIDNIGHT = pd.Timestamp("2024-03-01")
LATE = date(2024, 6, 1)
"""An observed_until far enough for every window of these tests to be complete."""


def spine_of(*pairs: tuple[str, date]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [p[0] for p in pairs], "as_of": [p[1] for p in pairs]})


def churned_by_learner(labels: pd.DataFrame) -> dict[str, int]:
    return dict(zip(labels["customer_id"], labels["churned"].tolist(), strict=True))


def test_the_label_window_is_t_inclusive_to_t_plus_w_exclusive():
    # given one learner per edge of [t, t + 30d)
    events = events_frame(
        [
            ["at_t", "2024-03-01 00:00:00", "session", 60.0],
            ["last_instant", "2024-03-30 23:59:59.999999", "session", 60.0],
            ["at_t_plus_w", "2024-03-31 00:00:00", "session", 60.0],
            ["just_before_t", "2024-02-29 23:59:59.999999", "session", 60.0],
        ]
    )
    spine = spine_of(
        *[(cid, T) for cid in ("at_t", "last_instant", "at_t_plus_w", "just_before_t")]
    )

    # when
    labels = compute_labels(events, spine, observed_until=LATE)

    # then
    assert churned_by_learner(labels) == {
        "at_t": 0,
        "last_instant": 0,
        "at_t_plus_w": 1,
        "just_before_t": 1,
    }


def test_a_cancellation_in_the_window_is_churn_even_with_activity():
    # given an active learner who cancels, and one who cancels after the window
    events = events_frame(
        [
            ["cancels", "2024-03-05 10:00:00", "session", 600.0],
            ["cancels", "2024-03-20 10:00:00", "subscription_cancelled"],
            ["cancels", "2024-03-25 10:00:00", "session", 600.0],
            ["cancels_later", "2024-03-05 10:00:00", "session", 600.0],
            ["cancels_later", "2024-04-02 10:00:00", "subscription_cancelled"],
        ]
    )

    # when
    labels = compute_labels(
        events, spine_of(("cancels", T), ("cancels_later", T)), observed_until=LATE
    )

    # then
    assert churned_by_learner(labels) == {"cancels": 1, "cancels_later": 0}


def test_the_horizon_is_configurable():
    # given a learner whose next event is 10 days after t
    events = events_frame([["a", "2024-03-11 00:00:00", "session", 60.0]])
    spine = spine_of(("a", T))

    # when
    week = compute_labels(events, spine, horizon_days=7, observed_until=LATE)
    month = compute_labels(events, spine, horizon_days=30, observed_until=LATE)
    eleven_days = compute_labels(events, spine, horizon_days=11, observed_until=LATE)

    # then
    assert week["churned"].tolist() == [1]
    assert month["churned"].tolist() == [0]
    assert eleven_days["churned"].tolist() == [0]
    assert week.attrs["horizon_days"] == 7


def test_incomplete_windows_are_excluded_and_counted(caplog):
    # given a log that ends on 2024-03-30, so it is complete until 2024-03-31 00:00
    events = events_frame(
        [
            ["a", "2024-03-02 10:00:00", "session", 60.0],
            ["b", "2024-03-30 10:00:00", "session", 60.0],
        ]
    )
    spine = spine_of(("a", T), ("b", T), ("a", date(2024, 3, 2)), ("b", date(2024, 3, 15)))

    # when
    with caplog.at_level(logging.INFO, logger="features.labels"):
        labels = compute_labels(events, spine)

    # then windows ending exactly at observed_until are complete; later ones are counted out
    assert labels["as_of"].tolist() == [T_MIDNIGHT, T_MIDNIGHT]
    assert churned_by_learner(labels) == {"a": 0, "b": 0}
    assert labels.attrs["excluded_incomplete"] == 2
    assert labels.attrs["observed_until"] == pd.Timestamp("2024-03-31")
    assert "2 of 4 rows excluded" in caplog.text


def test_an_explicit_observed_until_decides_completeness():
    # given
    events = events_frame([["a", "2024-03-02 10:00:00", "session", 60.0]])
    spine = spine_of(("a", T), ("a", date(2024, 3, 10)))

    # when
    labels = compute_labels(events, spine, observed_until=date(2024, 4, 5))

    # then the 2024-03-10 window would end on 2024-04-09: left out
    assert labels["as_of"].tolist() == [T_MIDNIGHT]
    assert labels.attrs["excluded_incomplete"] == 1


def test_a_tz_aware_observed_until_is_read_in_utc():
    # given a log complete until 01:00 on 1 April in Paris, i.e. 23:00 UTC on 31 March
    events = events_frame([["a", "2024-03-02 10:00:00", "session", 60.0]])
    spine = spine_of(("a", T), ("a", date(2024, 3, 2)))
    until = datetime(2024, 4, 1, 1, 0, tzinfo=ZoneInfo("Europe/Paris"))

    # when
    labels = compute_labels(events, spine, observed_until=until)

    # then the window ending at 00:00 UTC on 31 March is complete, the one ending on 1 April not
    assert labels.attrs["observed_until"] == pd.Timestamp("2024-03-31 23:00")
    assert labels["as_of"].tolist() == [T_MIDNIGHT]


def test_a_one_day_horizon_is_the_shortest_allowed():
    # given a learner active on t + 1 day only
    events = events_frame([["a", "2024-03-02 10:00:00", "session", 60.0]])

    # when the churn window is the day of t alone
    labels = compute_labels(events, spine_of(("a", T)), horizon_days=1, observed_until=LATE)

    # then no event fell in it: churned
    assert labels["churned"].tolist() == [1]


def test_output_has_the_label_contract_and_keeps_the_spine_order():
    # given a spine in no particular order with an extra column
    events = events_frame([["b", "2024-03-05 10:00:00", "session", 60.0]])
    spine = spine_of(("b", T), ("a", T), ("b", date(2024, 2, 10))).assign(note="ignored")

    # when
    labels = compute_labels(events, spine, observed_until=LATE)

    # then
    assert list(labels.columns) == ["customer_id", "as_of", "churned"]
    assert labels["churned"].dtype == np.int8
    assert labels["as_of"].dtype == np.dtype("datetime64[us]")
    assert labels["customer_id"].tolist() == ["b", "a", "b"]
    assert labels["churned"].tolist() == [0, 1, 0]
    assert labels.attrs["excluded_incomplete"] == 0


def test_parquet_paths_and_frames_give_the_same_labels(tmp_path):
    # given
    events = events_frame(
        [
            ["a", "2024-03-05 10:00:00", "session", 60.0],
            ["b", "2024-03-05 10:00:00", "subscription_cancelled"],
        ]
    )
    events.to_parquet(tmp_path / "events.parquet")
    spine = spine_of(("a", T), ("b", T), ("c", T))

    # when
    from_frame = compute_labels(events, spine)
    from_path = compute_labels(tmp_path / "events.parquet", spine)

    # then
    pd.testing.assert_frame_equal(from_frame, from_path)
    assert from_frame.attrs == from_path.attrs


def test_an_empty_log_needs_observed_until_and_then_everyone_churned():
    # given
    events = events_frame([])
    spine = spine_of(("a", T))

    # when / then
    with pytest.raises(ValueError, match="log is empty"):
        compute_labels(events, spine)
    labels = compute_labels(events, spine, observed_until=LATE)
    assert labels["churned"].tolist() == [1]


def test_bad_arguments_are_refused():
    # given
    events = events_frame([["a", "2024-03-05 10:00:00", "session", 60.0]])

    # when / then
    with pytest.raises(ValueError, match="horizon_days must be at least 1"):
        compute_labels(events, spine_of(("a", T)), horizon_days=0)
    with pytest.raises(ValueError, match="not at midnight"):
        compute_labels(events, pd.DataFrame({"customer_id": ["a"], "as_of": ["2024-03-01 10:00"]}))


# --- bring-your-own labels ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["parquet", "pq", "csv"])
def test_labels_files_load_in_the_label_contract(tmp_path, suffix):
    # given a labels file with text dates and ids that look like numbers
    raw = pd.DataFrame(
        {"customer_id": ["007", "008"], "as_of": ["2024-03-01", "2024-03-08"], "churned": [1, 0]}
    )
    path = tmp_path / f"labels.{suffix}"
    raw.to_csv(path, index=False) if suffix == "csv" else raw.to_parquet(path)

    # when
    labels = load_labels(path)

    # then
    assert labels["customer_id"].tolist() == ["007", "008"]
    assert labels["as_of"].tolist() == [T_MIDNIGHT, pd.Timestamp("2024-03-08")]
    assert labels["as_of"].dtype == np.dtype("datetime64[us]")
    assert labels["churned"].dtype == np.int8


def test_a_bad_labels_file_is_described_by_file_column_and_count(tmp_path):
    # given two rows with a churned value that is not 0/1
    path = tmp_path / "mine.csv"
    pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "as_of": ["2024-03-01"] * 3, "churned": [2, 0, 3]}
    ).to_csv(path, index=False)

    # when / then
    with pytest.raises(
        ValueError, match=r"mine\.csv: column churned: 2 rows fail check isin.*2, 3"
    ):
        load_labels(path)


def test_a_labels_file_with_repeated_pairs_a_missing_column_or_a_wrong_type_is_refused(
    tmp_path,
):
    # given
    repeated = tmp_path / "repeated.csv"
    pd.DataFrame(
        {"customer_id": ["a", "a"], "as_of": ["2024-03-01"] * 2, "churned": [0, 1]}
    ).to_csv(repeated, index=False)
    no_label = tmp_path / "no_label.parquet"
    pd.DataFrame({"customer_id": ["a"], "as_of": ["2024-03-01"]}).to_parquet(no_label)
    text = tmp_path / "labels.txt"
    text.write_text("customer_id,as_of,churned\n")

    # when / then
    with pytest.raises(
        ValueError, match=r"repeated\.csv: 2 rows repeat a \(customer_id, as_of\) pair \(a\)"
    ):
        load_labels(repeated)
    with pytest.raises(ValueError, match=r"no_label\.parquet: missing columns \['churned'\]"):
        load_labels(no_label)
    with pytest.raises(ValueError, match=r"labels.txt: expected a .parquet or .csv file"):
        load_labels(text)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        load_labels(tmp_path / "missing.csv")


def test_every_problem_of_a_labels_file_is_one_line_in_the_order_found(tmp_path):
    # given eight rows repeating four pairs, and four labels that are not 0/1
    path = tmp_path / "many.csv"
    pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "a", "b", "c", "d"],
            "as_of": ["2024-03-01"] * 9,
            "churned": [2, 3, 4, 5, 0, 1, 0, 1, 0],
        }
    ).to_csv(path, index=False)

    # when
    with pytest.raises(ValueError) as raised:
        load_labels(path)

    # then each check is a line with its count and at most three examples
    assert str(raised.value) == (
        "many.csv: 8 rows repeat a (customer_id, as_of) pair (a, b, c)\n"
        "many.csv: column churned: 4 rows fail check isin([0, 1]) (e.g. 2, 3, 4)"
    )
