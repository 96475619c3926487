"""Early warning: ST_006 dates, lead times, the N-days-ahead metrics and the operating points.

The toy story (log observed until 2026-06-30; test dates 05-01, 05-08, 05-15):

- A: last event 04-28 10:00, so ST_006 on 05-29: leads 28, 21, 14;
- B: cancels 05-20 08:00, so ST_006 (R10) on 05-21: leads 20, 13, 6;
- C: active throughout, no ST_006 in the log: no lead;
- D: inactive 04-05 12:00 -> 05-10 (ST_006 on 05-06), back, last event 05-12: ST_006 on 06-11:
  leads 5, 34, 27.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.early_warning import (
    EARLY_WARNING,
    RECOVERED,
    counts_at,
    early_warning_point,
    episodes,
    evaluate_early_warning,
    lead_days,
    recovered_point,
)

OBSERVED_UNTIL = pd.Timestamp("2026-06-30")
DATES = ["2026-05-01", "2026-05-08", "2026-05-15"]
LEADS = {"A": [28, 21, 14], "B": [20, 13, 6], "C": [np.nan] * 3, "D": [5, 34, 27]}
SCORES = {"A": [0.3, 0.6, 0.7], "B": [0.6, 0.4, 0.9], "C": [0.2, 0.8, 0.1], "D": [0.9, 0.7, 0.2]}


@pytest.fixture
def events() -> pd.DataFrame:
    rows = [
        ("A", "2026-04-20 10:00", "session"),
        ("A", "2026-04-28 10:00", "session"),
        ("B", "2026-05-03 12:00", "session"),
        ("B", "2026-05-20 08:00", "subscription_cancelled"),
        ("C", "2026-05-01 09:00", "session"),
        ("C", "2026-05-20 09:00", "session"),
        ("C", "2026-06-10 09:00", "session"),
        ("C", "2026-06-25 09:00", "session"),
        ("D", "2026-04-05 12:00", "session"),
        ("D", "2026-05-10 08:00", "session"),
        ("D", "2026-05-12 00:00", "lesson_completed"),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "ts", "event_type"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.sample(frac=1.0, random_state=3)  # the log's order must not matter


@pytest.fixture
def story() -> pd.DataFrame:
    rows = [
        (customer, day, LEADS[customer][i], SCORES[customer][i])
        for customer in "ABCD"
        for i, day in enumerate(DATES)
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "as_of", "lead", "model"])
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    return frame


def test_lead_is_days_to_the_next_st006_by_inactivity_or_cancellation(events, story):
    # given the story's rows and event log
    # when lead times are computed from the log
    lead = lead_days(story[["customer_id", "as_of"]], events, observed_until=OBSERVED_UNTIL)

    # then they are the hand-computed ones (C has none; D's return opens a second episode)
    np.testing.assert_array_equal(lead, story["lead"].to_numpy())


def test_a_st006_date_after_the_end_of_the_log_is_not_known(events, story):
    # given a log observed only until 06-01, before D's second ST_006 (06-11)
    # when lead times are computed
    lead = lead_days(story, events, observed_until=pd.Timestamp("2026-06-01"))

    # then D's rows after its return have no lead; the others are unchanged
    assert np.isnan(lead[[10, 11]]).all()
    assert lead[9] == 5 and lead[0] == 28


@pytest.mark.parametrize(
    ("days", "precision", "recall", "accuracy", "late"),
    [(7, 3 / 5, 3 / 6, 5 / 10, 2), (14, 3 / 5, 3 / 5, 5 / 9, 3), (21, 1 / 3, 1 / 3, 3 / 7, 5)],
)
def test_n_days_ahead_metrics_are_the_hand_computed_ones(
    story, days, precision, recall, accuracy, late
):
    # given flags at p >= 0.5
    flagged = story["model"] >= 0.5

    # when the rows are counted at lead target N
    counts = counts_at(story["lead"], flagged, days)

    # then precision, recall and accuracy leave the late rows out
    assert counts.precision == pytest.approx(precision)
    assert counts.recall == pytest.approx(recall)
    assert counts.accuracy == pytest.approx(accuracy)
    assert counts.late_rows == late


def test_episodes_take_the_earliest_flag_and_count_the_uncaught(story):
    # given flags at p >= 0.5
    flagged = story["model"] >= 0.5

    # when churn episodes are collected
    caught = episodes(story, story["lead"], flagged)

    # then A is caught 21 days ahead, B 20, D's first episode 5, D's second never
    assert caught.episodes == 4
    assert sorted(caught.leads[~np.isnan(caught.leads)]) == [5, 20, 21]
    assert caught.caught_share(14) == pytest.approx(0.5)
    assert caught.caught_share(21) == pytest.approx(0.25)
    assert caught.quartiles() == pytest.approx((12.5, 20.0, 20.5))


def test_early_warning_point_is_the_lowest_threshold_reaching_the_precision(story):
    # when the target precision is 0.6 (precision 0.6 at 0.6, 0.667 at 0.3, 0.625 at 0.2)
    point = early_warning_point(story["lead"], story["model"], precision=0.6, min_flags=1)

    # then the lowest threshold reaching it is chosen
    assert point.name == EARLY_WARNING
    assert point.reached
    assert point.threshold == pytest.approx(0.2)
    assert point.value == pytest.approx(5 / 8)


def test_an_unreachable_precision_takes_the_best_reachable_and_says_so(story):
    # when 0.85 is asked, which no threshold reaches
    point = early_warning_point(story["lead"], story["model"], min_flags=1)

    # then the best precision (0.667 at 0.3) is taken, marked as not reached
    assert not point.reached
    assert point.threshold == pytest.approx(0.3)
    assert point.value == pytest.approx(4 / 6)
    assert "not reached" in point.rule


def test_min_flags_keeps_a_precision_on_few_flags_from_deciding(story):
    # when a threshold needs 7 flags (only 0.2 and 0.1 have that many)
    point = early_warning_point(story["lead"], story["model"], min_flags=7)

    # then the best of those is taken
    assert point.threshold == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no threshold flags 10 rows"):
        early_warning_point(story["lead"], story["model"], min_flags=10)


def test_min_recall_keeps_a_threshold_that_misses_most_churners_from_deciding(story):
    # given recalls 0.2 (0.7), 0.6 (0.6), 0.8 (0.3), 1.0 (0.2 and 0.1) at 14 days
    # when a threshold must keep a recall of 0.9
    point = early_warning_point(story["lead"], story["model"], min_flags=1, min_recall=0.9)

    # then the best precision among 0.2 and 0.1 is taken (0.625 at 0.2), not 0.667 at 0.3
    assert point.threshold == pytest.approx(0.2)
    assert point.value == pytest.approx(5 / 8)
    assert "recall >= 0.90" in point.rule


def test_recovered_is_the_largest_score_as_safe_as_healthy_learners():
    # given healthy rows churning at 1/4 and an isotonic fit 0, 0, .5, .5, 1, 1
    churned = [0, 0, 1, 0, 1, 1]
    score = [0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
    healthy = [True, True, True, True, False, False]

    # when the recovered point is chosen
    point = recovered_point(churned, score, healthy)

    # then it is the largest score fitted at or below the base rate
    assert point.name == RECOVERED
    assert point.reached
    assert point.threshold == pytest.approx(0.2)
    assert point.target == pytest.approx(0.25)


def test_evaluation_chooses_on_calibration_and_measures_on_test(story):
    # given the story as both slices, with a second scorer that ranks by lead
    frame = story.assign(
        churned=story["lead"].between(1, 30).astype(int),
        risk_indicator_count=np.where(story["customer_id"] == "C", 0, 2),
        ranker=1 - story["lead"].fillna(60) / 60,
    )

    # when every scorer is evaluated
    result = evaluate_early_warning(frame, frame, ["model", "ranker"], min_flags=1)

    # then each scorer has its own point, applied on test, and the model's points are named
    assert result.points["model"].threshold == pytest.approx(0.3)
    assert result.table.loc[("model", 14), "threshold"] == pytest.approx(0.3)
    assert result.table.loc[("model", 14), "precision"] == pytest.approx(4 / 6)
    assert set(result.operating_points) == {EARLY_WARNING, RECOVERED}
    assert "NOT reached" in result.claim("model")
    assert list(result.table.index.get_level_values("days")[:3]) == [7, 14, 21]
