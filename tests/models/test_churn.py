"""Tests for models.churn: behaviour on a planted signal, calibration, confidence, persistence."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from models import matrix
from models.calibration import VennAbersCalibration
from models.churn import (
    PREDICTION_COLUMNS,
    ChurnModel,
    _checked_predictions,
    decision_confidence,
    lightgbm_params,
)
from models.matrix import (
    FeatureFrameError,
    model_feature_names,
    to_model_matrix,
)
from models.metrics import expected_calibration_error
from tests.models.calibration import claims_per_bin, logistic_calibration
from tests.models.synthetic import TEST_PARAMS, make_feature_frame

# --- behaviour on the planted signal --------------------------------------------------------------


def _predictions_along(model: ChurnModel, rows: pd.DataFrame, column: str, grid) -> np.ndarray:
    """p_churn of each row (axis 0) as ``column`` takes each value of ``grid`` (axis 1)."""
    return np.column_stack(
        [model.predict(rows.assign(**{column: value}))["p_churn"].to_numpy() for value in grid]
    )


def test_more_days_of_inactivity_never_lower_p_churn_and_raise_it_overall(fitted):
    # given 200 test learners
    rows = fitted.test_frame.iloc[:200]
    # when their days since the last event go from 0 to 40
    p_churn = _predictions_along(fitted.model, rows, "days_since_last_event", range(0, 41, 5))
    # then each learner's risk is non-decreasing and rises clearly on average
    assert (np.diff(p_churn, axis=1) >= 0).all()
    assert p_churn[:, -1].mean() - p_churn[:, 0].mean() > 0.3


def test_a_steeper_decline_never_lowers_p_churn_and_raises_it_overall(fitted):
    # given 200 test learners
    rows = fitted.test_frame.iloc[:200]
    # when their activity trend goes from +1 (rising) to -1 (stopped)
    p_churn = _predictions_along(fitted.model, rows, "activity_trend_7v23", np.linspace(1, -1, 9))
    # then
    assert (np.diff(p_churn, axis=1) >= 0).all()
    assert p_churn[:, -1].mean() - p_churn[:, 0].mean() > 0.15


def test_more_active_days_lower_p_churn_on_average(fitted):
    # given 200 test learners (active days are not constrained: the model must learn this)
    rows = fitted.test_frame.iloc[:200]
    # when
    p_churn = _predictions_along(fitted.model, rows, "active_days_30d", [0, 15, 30])
    # then
    assert p_churn[:, 0].mean() > p_churn[:, 1].mean() > p_churn[:, 2].mean()


def test_customer_ids_and_row_order_change_nothing(fitted):
    # given the test slice, and the same rows shuffled under other customer ids
    frame = fitted.test_frame.iloc[:500]
    shuffled = frame.sample(frac=1.0, random_state=4)
    shuffled["customer_id"] = [f"other-{i}" for i in range(len(shuffled))]
    # when
    original = fitted.model.predict(frame)
    reordered = fitted.model.predict(shuffled)
    # then
    assert not reordered.index.equals(original.index)
    pd.testing.assert_frame_equal(reordered.loc[original.index], original)


# --- calibration and confidence -------------------------------------------------------------------


def test_calibrated_probability_has_ece_at_most_0_03_on_the_held_out_slice(fitted):
    # given the untouched test slice / when
    p_churn = fitted.model.predict(fitted.test_frame)["p_churn"]
    # then
    assert expected_calibration_error(fitted.test_outcomes, p_churn) <= 0.03


def test_venn_abers_calibrates_an_overconfident_booster(overconfident):
    # given a deliberately overfit booster and held-out learners
    model, frame, churned = (
        overconfident.model,
        overconfident.test_frame,
        overconfident.test_outcomes,
    )
    # when their calibrated probability and the booster's raw score are predicted
    p_churn = model.predict(frame)["p_churn"]
    raw = model.raw_probability(frame)
    # then p_churn has calibration slope 1 and intercept 0 within their 95% intervals
    calibrated = logistic_calibration(churned, p_churn)
    assert calibrated.holds, calibrated
    # and the raw score does not (overconfident: slope well below 1), so the check tells them apart
    uncalibrated = logistic_calibration(churned, raw)
    assert not uncalibrated.holds, uncalibrated
    assert uncalibrated.slope < 0.8


def test_probabilities_shrunk_by_a_tenth_fail_the_calibration_check(fitted):
    # given the held-out predictions of the test model (raw scores nearly calibrated here), and
    # the same probabilities shrunk by 0.9: both have a 15-bin ECE under 0.03
    p_churn = fitted.model.predict(fitted.test_frame)["p_churn"].to_numpy()
    raw = fitted.model.raw_probability(fitted.test_frame)
    # when / then p_churn passes the calibration slope and intercept check
    assert logistic_calibration(fitted.test_outcomes, p_churn).holds
    # and the shrunk ones fail it
    for shrunk in (0.9 * p_churn, 0.9 * raw):
        check = logistic_calibration(fitted.test_outcomes, shrunk)
        assert not check.holds, check


def test_prediction_columns_follow_their_definitions(fitted):
    # given / when
    predictions = fitted.model.predict(fitted.test_frame.iloc[:2000])
    p_churn, p_low, p_high, confidence = (predictions[c].to_numpy() for c in PREDICTION_COLUMNS)
    # then: the Venn-Abers merge and the decision confidence
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    np.testing.assert_allclose(p_churn, p_high / (1 - p_low + p_high))
    assert ((p_low <= p_churn) & (p_churn <= p_high)).all()
    np.testing.assert_allclose(confidence, np.where(p_churn >= 0.5, p_low, 1 - p_high))


def test_higher_confidence_means_more_reliable_decisions_and_no_overclaim(fitted):
    # given the decisions (p_churn >= 0.5) on the test slice, split into confidence quintiles
    predictions = fitted.model.predict(fitted.test_frame)
    right = (predictions["p_churn"].to_numpy() >= 0.5) == (fitted.test_outcomes == 1)
    confidence = predictions["confidence"].to_numpy()
    quintiles = np.array_split(np.argsort(confidence, kind="stable"), 5)
    # when
    accuracy = np.array([right[rows].mean() for rows in quintiles])
    claimed = np.array([confidence[rows].mean() for rows in quintiles])
    # then: the top quintile is right clearly more often than the bottom one
    assert accuracy[-1] - accuracy[0] > 0.2
    # and each quintile is right at least as often as claimed, within 3 binomial standard errors
    # (2000 decisions per quintile: the test slice itself measures accuracy to about +-0.01)
    standard_error = np.sqrt(claimed * (1 - claimed) / np.array([len(q) for q in quintiles]))
    assert (accuracy >= claimed - 3 * standard_error).all(), (accuracy, claimed)


def test_confidence_is_a_pessimistic_probability_that_the_decision_is_right(thinly_calibrated):
    # given the decisions of one booster calibrated on ten thin slices (wide intervals), pooled
    predictions = thinly_calibrated.predictions
    churner = predictions["p_churn"].to_numpy() >= 0.5
    right = churner == (thinly_calibrated.outcomes == 1)
    # when the decisions are binned by their confidence (deciles of 5,000)
    accuracy, claimed, error = claims_per_bin(predictions["confidence"].to_numpy(), right)
    # then each decile is right at least as often as it claims, within 3 standard errors
    assert (accuracy >= claimed - 3 * error).all(), (accuracy, claimed)
    # and the optimistic end of the same intervals over-claims in the same check
    optimistic = np.where(churner, predictions["p_high"], 1 - predictions["p_low"])
    accuracy, claimed, error = claims_per_bin(optimistic, right)
    assert (accuracy < claimed - 3 * error).any(), (accuracy, claimed)


def test_confidence_claims_less_than_the_calibrated_probability_by_the_calibration_doubt(fitted):
    # given the held-out predictions
    predictions = fitted.model.predict(fitted.test_frame)
    p_churn, p_low, p_high, confidence = (predictions[c].to_numpy() for c in PREDICTION_COLUMNS)
    # when the confidence is set against the calibrated chance that the decision is right
    shortfall = np.maximum(p_churn, 1 - p_churn) - confidence
    width = p_high - p_low
    # then it claims less wherever the interval leaves doubt, never by more than the interval,
    # and the more the wider the interval: a pessimistic bound, not the point estimate
    assert (width > 0).all()
    assert (shortfall > 0).all()
    assert (shortfall <= width + 1e-12).all()
    assert spearmanr(shortfall, width).statistic > 0.5


def test_a_probability_of_exactly_one_half_is_a_churner_decision():
    # given p_churn 0.5 and just below it, with the interval [0.45, 0.7]
    confidence = decision_confidence([0.5, 0.4999], [0.45, 0.45], [0.7, 0.7])
    # then 0.5 decides "churner" (confidence p_low), just below decides "stays" (1 - p_high)
    np.testing.assert_allclose(confidence, [0.45, 0.3])


def _predictions(*rows: tuple[float, float, float, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


def test_the_prediction_check_passes_the_edges_of_its_contract():
    # given probabilities at 0 and 1, and p_churn a rounding error (1e-12) outside its interval
    edges = _predictions(
        (0.0, 0.0, 0.0, 1.0),
        (1.0, 1.0, 1.0, 1.0),
        (0.25, 0.25 + 1e-12, 0.3, 0.7),
        (0.25 + 1e-12, 0.2, 0.25, 0.7),
    )
    # when / then they pass unchanged
    assert _checked_predictions(edges) is edges


def test_the_prediction_check_counts_each_kind_of_broken_row():
    # given a probability above 1, a missing one, p_churn below and above its interval, a good row
    broken = _predictions(
        (0.5, 0.4, 0.6, 1.2),
        (0.5, 0.4, 0.6, np.nan),
        (0.3, 0.4, 0.6, 0.4),
        (0.7, 0.4, 0.6, 0.4),
        (0.5, 0.4, 0.6, 0.5),
    )
    # when / then
    with pytest.raises(ValueError) as raised:
        _checked_predictions(broken)
    assert str(raised.value) == (
        "predictions: 2 of 5 rows have a probability outside [0, 1] or missing, "
        "2 have p_churn outside [p_low, p_high]"
    )
    # and either kind alone is enough to refuse the frame
    for alone in (broken.iloc[[0, 4]], broken.iloc[[2, 4]]):
        with pytest.raises(ValueError, match="predictions: "):
            _checked_predictions(alone)


def test_a_calibrator_file_holding_pickled_objects_is_refused(tmp_path):
    # given a calibrator.npz whose arrays are Python objects (loading them would unpickle)
    path = tmp_path / "calibrator.npz"
    objects = np.array([{"not": "numbers"}], dtype=object)
    np.savez(path, scores=objects, p0=objects, p1=objects)
    # when / then
    with pytest.raises(ValueError, match="allow_pickle=False"):
        VennAbersCalibration.load(path)


# --- explanations, persistence --------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [None, 64], ids=["one matrix", "chunks of 64"])
def test_raw_probability_matches_lightgbm_scoring_the_data_frame_itself(
    fitted, monkeypatch, chunk_rows
):
    # given rows with missing product tags first and last (the fast path passes category codes,
    # NaN if missing) and a missing count; in chunks of 64, 300 rows are four and a short one
    if chunk_rows is not None:
        monkeypatch.setattr(matrix, "PREDICT_CHUNK_ROWS", chunk_rows)
    rows = fitted.test_frame.iloc[:300].copy()
    rows.loc[rows.index[:5], "product_tag"] = None
    rows.loc[rows.index[290:], "product_tag"] = None
    rows.loc[rows.index[299], "sessions_7d"] = np.nan
    # when
    fast = fitted.model.raw_probability(rows)
    # then every row has the score LightGBM gives the whole frame's matrix, in the frame's order
    reference = fitted.model.booster.predict(to_model_matrix(rows))
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize(("rows", "threads"), [(40, 1), (300, 3)])
def test_lightgbm_predicts_a_large_batch_on_the_cores_the_process_may_use(
    fitted, monkeypatch, rows, threads
):
    # given a process allowed 3 CPUs (LSTEP_THREADS) and LightGBM's predict watched
    monkeypatch.setenv("LSTEP_THREADS", "3")
    asked = []
    predict = fitted.model.booster.predict
    monkeypatch.setattr(
        fitted.model.booster,
        "predict",
        lambda values, **options: asked.append(options) or predict(values, **options),
    )
    # when a small batch and a large one are scored
    fitted.model.raw_probability(fitted.test_frame.iloc[:rows])
    # then the small one runs on one thread, the large one on the 3 cores, not OpenMP's count of
    # the host's
    assert asked == [{"num_threads": threads}]


def test_a_frame_scored_in_chunks_counts_its_bad_values_over_every_chunk(fitted, monkeypatch):
    # given chunks of 64 rows and fractional session counts in the second chunk and the third
    monkeypatch.setattr(matrix, "PREDICT_CHUNK_ROWS", 64)
    rows = fitted.test_frame.iloc[:300].copy()
    rows["sessions_7d"] = rows["sessions_7d"].astype("float64")
    rows.loc[rows.index[[70, 71, 150]], "sessions_7d"] = 1.5
    # when / then the error counts the three values, not the two of the first chunk met
    with pytest.raises(FeatureFrameError, match=r"sessions_7d has 3 non-integer values"):
        fitted.model.raw_probability(rows)


def test_contributions_sum_to_the_raw_log_odds(fitted):
    # given a few test rows
    rows = fitted.test_frame.iloc[:50]
    # when
    contributions = fitted.model.contributions(rows)
    # then
    raw = fitted.model.raw_probability(rows)
    assert list(contributions.columns) == [*model_feature_names(), "bias"]
    assert contributions.index.equals(rows.index)
    np.testing.assert_allclose(contributions.sum(axis=1), np.log(raw / (1 - raw)), atol=1e-9)
    assert contributions["days_since_last_event"].abs().mean() > contributions["mrr"].abs().mean()


def test_predictions_with_contributions_equal_the_two_separate_calls(fitted):
    # given rows with their own index, one with a missing count
    rows = fitted.test_frame.iloc[10:40].copy()
    rows.index = rows.index + 1000
    rows.loc[rows.index[0], "sessions_7d"] = np.nan
    # when both come from one model matrix
    predictions, contributions = fitted.model.predict_with_contributions(rows)
    # then they are exactly what predict and contributions return
    pd.testing.assert_frame_equal(predictions, fitted.model.predict(rows))
    pd.testing.assert_frame_equal(contributions, fitted.model.contributions(rows))
    # and an empty frame gives empty frames
    empty_predictions, empty_contributions = fitted.model.predict_with_contributions(rows.iloc[:0])
    assert empty_predictions.empty and list(empty_contributions.columns)[-1] == "bias"


def test_predictions_with_contributions_name_mistyped_columns(fitted):
    # given a frame whose product tag is unknown
    rows = fitted.test_frame.iloc[:3].copy()
    rows["product_tag"] = "PT_999"
    # when / then the same FeatureFrameError as predict names the column and the value
    with pytest.raises(FeatureFrameError, match=r"product_tag.*PT_999"):
        fitted.model.predict_with_contributions(rows)


def test_save_and_load_give_identical_predictions(fitted, tmp_path):
    # given a saved model
    fitted.model.save(tmp_path / "churn")
    # when
    loaded = ChurnModel.load(tmp_path / "churn")
    # then
    rows = fitted.test_frame.iloc[:1000]
    pd.testing.assert_frame_equal(loaded.predict(rows), fitted.model.predict(rows))
    pd.testing.assert_frame_equal(loaded.contributions(rows), fitted.model.contributions(rows))
    assert loaded.params == fitted.model.params
    assert sorted(p.name for p in (tmp_path / "churn").iterdir()) == [
        "booster.txt",
        "calibrator.npz",
        "model.json",
    ]


def test_the_label_window_travels_with_the_saved_model_and_is_none_when_never_recorded(
    fitted, tmp_path
):
    # given a copy of the model that records a 14-day label window, saved
    dataclasses.replace(fitted.model, horizon_days=14).save(tmp_path / "churn")
    # when loaded, then the window comes back
    assert ChurnModel.load(tmp_path / "churn").horizon_days == 14
    # and a model.json written before the window was recorded loads with None
    metadata_file = tmp_path / "churn" / "model.json"
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    del metadata["horizon_days"]
    metadata_file.write_text(json.dumps(metadata), encoding="utf-8")
    assert ChurnModel.load(tmp_path / "churn").horizon_days is None


def test_operating_points_travel_with_the_saved_model_and_default_to_none(fitted, tmp_path):
    # given a copy of the model with operating points, saved
    model = dataclasses.replace(fitted.model, operating_points={"early_warning": 0.61})
    model.save(tmp_path / "churn")
    # when loaded, then the points come back
    assert ChurnModel.load(tmp_path / "churn").operating_points == {"early_warning": 0.61}
    # and a model.json written before operating points existed loads with none
    metadata_file = tmp_path / "churn" / "model.json"
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    del metadata["operating_points"]
    metadata_file.write_text(json.dumps(metadata), encoding="utf-8")
    assert ChurnModel.load(tmp_path / "churn").operating_points == {}


def test_loading_an_incomplete_directory_names_the_missing_files(fitted, tmp_path):
    # given a saved model without its calibrator
    fitted.model.save(tmp_path / "churn")
    (tmp_path / "churn" / "calibrator.npz").unlink()
    # when / then
    with pytest.raises(FileNotFoundError, match=r"missing \['calibrator.npz'\]"):
        ChurnModel.load(tmp_path / "churn")


def test_an_empty_frame_gets_an_empty_prediction(fitted):
    # given / when
    predictions = fitted.model.predict(fitted.test_frame.iloc[:0])
    # then
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert predictions.empty


def test_an_empty_frame_missing_a_model_column_is_refused_all_the_same(fitted):
    # given no rows, and no sessions_7d column
    rows = fitted.test_frame.iloc[:0].drop(columns="sessions_7d")
    # when / then
    with pytest.raises(FeatureFrameError, match=r"missing columns \['sessions_7d'\]"):
        fitted.model.predict(rows)


# --- fitting ----------------------------------------------------------------------------------


def test_fitting_twice_with_the_same_seed_gives_the_same_model():
    # given a small population
    frame, outcomes = make_feature_frame(600, seed=9)
    fit_args = (frame.iloc[:400], outcomes[:400], frame.iloc[400:], outcomes[400:])
    # when
    first = ChurnModel.fit(*fit_args, params=TEST_PARAMS, num_boost_round=5, seed=2)
    second = ChurnModel.fit(*fit_args, params=TEST_PARAMS, num_boost_round=5, seed=2)
    # then
    np.testing.assert_array_equal(first.raw_probability(frame), second.raw_probability(frame))
    assert first.training_summary["n_train"] == 400
    assert first.params["monotone_constraints"][0] == 1  # days_since_last_event


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_cal": np.zeros(100)}, "y_cal: needs both classes, got 0 churners in 100 rows"),
        ({"y_train": pd.Series(np.ones(100), index=range(1, 101))}, "y_train: its index"),
        ({"y_train": np.ones(99)}, "y_train: 99 outcomes for 100 feature rows"),
        ({"y_train": np.full(100, 0.5)}, "y_train: 100 values are not 0/1"),
        ({"params": {"seed": 7}}, "conflicts with seed=0"),
        ({"params": {"n_estimators": 7}}, "pass num_boost_round instead"),
        ({"params": {"objective": "regression"}}, "objective must be 'binary'"),
        ({"num_boost_round": 0}, "num_boost_round must be >= 1"),
    ],
)
def test_fit_rejects_inconsistent_inputs_before_training(change, message):
    # given a small valid population and one inconsistent input
    frame, outcomes = make_feature_frame(200, seed=10)
    arguments = {
        "X_train": frame.iloc[:100],
        "y_train": outcomes[:100],
        "X_cal": frame.iloc[100:],
        "y_cal": outcomes[100:],
        "params": TEST_PARAMS,
        "num_boost_round": 3,
    }
    # when / then
    with pytest.raises(ValueError, match=message):
        ChurnModel.fit(**{**arguments, **change})


def test_lightgbm_params_constrain_recency_and_trend_unless_the_caller_says_otherwise():
    # given the model features
    names = model_feature_names()
    # when
    default = lightgbm_params({"num_leaves": 7}, seed=1)
    replaced = lightgbm_params({"monotone_constraints": [0] * len(names)}, seed=1)
    # then
    constraints = dict(zip(names, default["monotone_constraints"], strict=True))
    assert constraints["days_since_last_event"] == 1
    assert constraints["activity_trend_7v23"] == -1
    assert constraints["active_days_30d"] == 0
    assert (default["num_leaves"], default["seed"], default["objective"]) == (7, 1, "binary")
    assert replaced["monotone_constraints"] == [0] * len(names)
