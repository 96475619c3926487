"""Training sets: observation dates, complete label windows, and bring-your-own labels."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from training.dataset import build_training_set, log_window, training_dates

W = pd.Timedelta(days=30)


@pytest.fixture(scope="module")
def inputs(population):
    events = pd.read_parquet(population.events)
    customers = pd.read_parquet(population.customers)
    truth = pd.read_parquet(population.truth)
    truth["as_of"] = pd.to_datetime(truth["as_of"]).astype("datetime64[us]")
    return events, customers, truth


@pytest.fixture(scope="module")
def computed(inputs):
    events, customers, _ = inputs
    return build_training_set(events, customers, horizon_days=30, every_days=7)


def test_observation_dates_have_a_full_feature_window_and_a_complete_label_window():
    # given a log from 2026-01-01 complete until 2026-04-01
    start, until = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-04-01")

    # when the weekly training dates are chosen for a 30-day horizon
    dates = training_dates(start, until, horizon_days=30, every_days=7)

    # then they run from 30 days after the start to the last date whose window closes by the end
    assert dates[0] == date(2026, 1, 31)
    assert dates[-1] == date(2026, 2, 28)
    assert len(dates) == 5


def test_a_log_too_short_for_features_and_a_label_is_a_clear_error():
    # when / then
    with pytest.raises(ValueError, match="too short for 30 days of features plus a 30-day"):
        training_dates(
            pd.Timestamp("2026-01-01"), pd.Timestamp("2026-02-20"), horizon_days=30, every_days=7
        )


def test_log_window_is_the_first_day_to_the_midnight_after_the_last_event():
    # given two events
    events = pd.DataFrame(
        {"ts": pd.to_datetime(["2026-01-03 08:00", "2026-02-10 23:59"], utc=True)}
    )

    # when / then
    assert log_window(events) == (pd.Timestamp("2026-01-03"), pd.Timestamp("2026-02-11"))
    with pytest.raises(ValueError, match="empty"):
        log_window(events.iloc[:0])


def test_no_training_row_has_an_incomplete_label_window(computed):
    # given the training set of the simulated population
    frame = computed.frame

    # then every label window closes by the end of the log, and dates are weekly from day 30
    assert (frame["as_of"] + W <= computed.observed_until).all()
    assert frame["as_of"].min() == computed.log_start + W
    assert set(frame["as_of"].diff().dropna().unique()) <= {pd.Timedelta(0), pd.Timedelta(days=7)}
    assert computed.incomplete_excluded == 0


def test_rows_and_labels_agree_with_the_simulator(computed, inputs):
    # given the simulator's own eligible rows and realised labels at the same dates
    _, _, truth = inputs
    truth = truth.dropna(subset=["y"])

    # when joined with the training set
    joined = computed.frame.merge(truth, on=["customer_id", "as_of"], how="outer", indicator=True)

    # then both hold the same (customer, as_of) rows and the same labels
    assert (joined["_merge"] == "both").all()
    assert (joined["churned"] == joined["y"]).all()


def test_bring_your_own_labels_are_the_rows(inputs):
    # given a labels file of 50 pairs, two of them with label windows past the end of the log
    events, customers, truth = inputs
    labels = truth.dropna(subset=["y"]).sample(48, random_state=0)
    late = truth[truth["as_of"] == truth["as_of"].max()].head(2).assign(y=1)
    labels = pd.concat([labels, late]).rename(columns={"y": "churned"})
    labels = labels[["customer_id", "as_of", "churned"]].astype({"churned": "int8"})

    # when the training set is built from it
    built = build_training_set(events, customers, labels=labels, horizon_days=30)

    # then its rows are exactly those pairs and labels, and the two late ones are counted
    keys = ["customer_id", "as_of"]
    got = built.frame[[*keys, "churned"]].sort_values(keys).reset_index(drop=True)
    expected = labels.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert built.labels_beyond_log == 2
    assert built.label_source == "labels file" and built.every_days is None
