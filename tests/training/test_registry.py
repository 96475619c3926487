"""Registry: champion/challenger decisions on the same test slice, and promotion / rollback."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime

import mlflow
import numpy as np
import pytest
from mlflow.types import ColSpec, DataType, Schema

from models.churn import ChurnModel
from models.metrics import expected_calibration_error, pr_auc
from models.pyfunc import log_churn_model
from tests.training.frames import feature_frame, weekly_dates
from training.registry import (
    CHALLENGER,
    CHAMPION,
    Gain,
    SliceScore,
    current_champion,
    decide,
    early_warning_recall,
    pr_auc_gain,
    promote,
    register_decision,
    score_version,
)
from training.tracking import ensure_experiment

NAME = "lstep-churn-test"
RETRAINED = "lstep-churn-retrained-test"
PARAMS = {"num_leaves": 7, "learning_rate": 0.1, "num_threads": 1, "min_data_in_leaf": 20}


NOISE_GAIN = (0.01, -0.006)
"""A PR-AUC gain whose paired-bootstrap interval reaches below 0: noise."""
REAL_GAIN = (0.01, 0.004)


@pytest.mark.parametrize(
    ("new", "champion", "gain", "alias", "reason"),
    [
        ((0.60, 0.02), None, None, CHAMPION, "no champion yet"),
        ((0.61, 0.02), (0.60, 0.02), REAL_GAIN, CHAMPION, "beats 0.6000"),
        ((0.61, 0.024), (0.60, 0.02), REAL_GAIN, CHAMPION, "beyond noise"),
        ((0.61, 0.02), (0.60, 0.02), NOISE_GAIN, CHALLENGER, "within noise"),
        ((0.60, 0.01), (0.60, 0.02), (0.0, -0.01), CHALLENGER, "not higher"),
        ((0.59, 0.01), (0.60, 0.02), (-0.01, -0.02), CHALLENGER, "not higher"),
        ((0.70, 0.03), (0.60, 0.02), (0.10, 0.05), CHALLENGER, "ECE 0.0300 is worse"),
        ((0.61, 0.02, 0.47), (0.60, 0.02, 0.50), REAL_GAIN, CHALLENGER, "loses early-warning"),
        ((0.61, 0.02, 0.49), (0.60, 0.02, 0.50), REAL_GAIN, CHAMPION, "recall (14+ days"),
        ((0.61, 0.02, 0.40), (0.60, 0.02), REAL_GAIN, CHAMPION, "recall not compared"),
    ],
)
def test_decide(new, champion, gain, alias, reason):
    # given the new version's and the champion's scores on the same slice, and the paired gain
    new_score = SliceScore("2", *new)
    champion_score = SliceScore("1", *champion) if champion else None
    paired = Gain(*gain, resamples=1000) if gain else None

    # when
    decided, why = decide(new_score, champion_score, paired)

    # then
    assert decided == alias
    assert reason in why


def test_early_warning_recall_is_at_the_versions_own_recorded_threshold():
    # given leads of 20 (targets), 40 (not) and 5 (late) days and two versions' scores
    lead = np.array([20, 20, 20, 20, 40, 5])
    p = np.array([0.9, 0.7, 0.5, 0.3, 0.8, 0.9])

    # when each is flagged at its own early_warning threshold
    strict = early_warning_recall(lead, p, {"early_warning": 0.75})
    loose = early_warning_recall(lead, p, {"early_warning": 0.4})

    # then recall counts the 14+ day targets only, and a version without the point has none
    assert (strict, loose) == (0.25, 0.75)
    assert early_warning_recall(lead, p, {}) is None


def test_a_gain_within_noise_says_how_far_its_interval_reaches():
    # given a 0.01 gain whose interval reaches -0.006
    new, champion = SliceScore("2", 0.61, 0.02), SliceScore("1", 0.60, 0.02)

    # when
    _, why = decide(new, champion, Gain(*NOISE_GAIN, resamples=1000))

    # then the reason gives the gain, the lower end and the resamples
    assert "PR-AUC gain +0.0100 (0.6100 vs 0.6000) is within noise" in why
    assert "paired-bootstrap interval is -0.0060 (1000 resamples)" in why


def test_deciding_against_a_champion_without_the_paired_gain_is_refused():
    with pytest.raises(ValueError, match="needs the paired PR-AUC gain"):
        decide(SliceScore("2", 0.7, 0.02), SliceScore("1", 0.6, 0.02))


def _planted(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from known probabilities, and those probabilities."""
    rng = np.random.default_rng(seed)
    truth = rng.beta(1.0, 2.5, rows)
    return (rng.random(rows) < truth).astype(float), truth


def test_the_paired_bootstrap_finds_no_gain_in_a_noisy_copy_of_the_champion():
    # given a champion's scores and a copy with its own small noise, on 2,000 rows
    churned, champion = _planted(2_000, seed=1)
    rng = np.random.default_rng(2)
    copies = [np.clip(champion + rng.normal(0, 0.03, churned.size), 0, 1) for _ in range(5)]

    # when each copy's gain is bootstrapped
    gains = [pr_auc_gain(churned, copy, champion, resamples=300) for copy in copies]

    # then none is beyond noise, whichever way its observed gain went
    assert all(gain.lower <= 0 for gain in gains), gains
    assert any(gain.observed > 0 for gain in gains), "no copy was lucky: the case is not tested"


def test_the_paired_bootstrap_finds_a_real_gain_and_is_seeded():
    # given the true probabilities against a blurred version of them, on 2,000 rows
    churned, truth = _planted(2_000, seed=3)
    blurred = np.clip(truth + np.random.default_rng(4).normal(0, 0.15, churned.size), 0, 1)

    # when
    first = pr_auc_gain(churned, truth, blurred, resamples=300)
    again = pr_auc_gain(churned, truth, blurred, resamples=300)

    # then the gain is beyond noise, and the same inputs give the same interval
    assert first.lower > 0
    assert first.observed == pytest.approx(pr_auc(churned, truth) - pr_auc(churned, blurred))
    assert first == again


def _fit(frame_seed: int, signal: float, rounds: int) -> ChurnModel:
    dates = weekly_dates(date(2026, 2, 1), 2)
    train = feature_frame(400, dates, seed=frame_seed, signal=signal)
    cal = feature_frame(400, dates, seed=frame_seed + 1, signal=signal)
    return ChurnModel.fit(
        train, train["churned"], cal, cal["churned"], params=PARAMS, num_boost_round=rounds
    )


def _retrained_by_chance(first: ChurnModel, test) -> ChurnModel:
    """``first``'s recipe on the first fresh sample whose PR-AUC on ``test`` is higher by chance.

    Which sample that is depends on every random column of the frames, so on the catalog: it is
    searched for (seeds 24, 26, ...), not hard-coded.
    """

    def score(model: ChurnModel) -> float:
        return pr_auc(test["churned"], model.predict(test)["p_churn"].to_numpy())

    bar = score(first)
    for seed in range(24, 64, 2):
        model = _fit(seed, 1.0, 30)
        if score(model) > bar:
            return model
    raise AssertionError("no fresh sample scored higher than the first model by chance")


def _register(client, experiment_id, model: ChurnModel, test, name: str):
    """Log ``model`` as a new version of ``name`` and let the registry decide its alias."""
    with mlflow.start_run(experiment_id=experiment_id):
        info = log_churn_model(model, input_example=test.head(5), registered_model_name=name)
    p = model.predict(test)["p_churn"].to_numpy()
    score = SliceScore(
        str(info.registered_model_version),
        pr_auc(test["churned"], p),
        expected_calibration_error(test["churned"], p),
    )
    return register_decision(
        client,
        score.version,
        score,
        test_frame=test,
        churned=test["churned"].to_numpy(),
        new_p_churn=p,
        name=name,
    )


@pytest.fixture(scope="module")
def store(migrated_mlflow_db, tmp_path_factory):
    """A SQLite tracking store holding two registered models, two versions each.

    NAME: v1 a real model, v2 a model of noise. RETRAINED: v1 the same real model, v2 the same
    recipe trained on a fresh sample, whose PR-AUC on the test slice is higher by chance.
    """
    path = tmp_path_factory.mktemp("registry") / "mlflow.db"
    shutil.copyfile(migrated_mlflow_db, path)
    uri = f"sqlite:///{path}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = ensure_experiment(client, "registry-test", uri)
    test = feature_frame(500, weekly_dates(date(2026, 4, 1), 2), seed=50)
    good = _fit(10, 1.0, 30)
    versions = {
        "good": _register(client, experiment_id, good, test, NAME),
        "noise": _register(client, experiment_id, _fit(20, 0.0, 30), test, NAME),
        "first": _register(client, experiment_id, good, test, RETRAINED),
        "retrained": _register(
            client, experiment_id, _retrained_by_chance(good, test), test, RETRAINED
        ),
    }
    return uri, client, versions


def test_first_version_becomes_champion(store):
    # given the store after two trainings
    _, _, versions = store

    # then the first version took the champion alias
    assert versions["good"].alias == CHAMPION
    assert "no champion yet" in versions["good"].reason


def test_worse_version_is_challenger_and_the_champion_stays(store):
    # given the store after the model of noise was registered
    _, client, versions = store
    noise, good = versions["noise"], versions["good"]

    # then it is challenger, the champion is untouched and the reason names the comparison
    assert noise.alias == CHALLENGER
    assert str(current_champion(client, NAME).version) == good.version
    assert str(client.get_model_version_by_alias(NAME, CHALLENGER).version) == noise.version
    assert f"champion v{good.version}" in noise.reason
    # and the champion was re-scored on the same slice: its PR-AUC there equals the in-process one
    assert noise.champion.pr_auc == pytest.approx(good.new.pr_auc, abs=1e-9)
    tags = client.get_model_version(NAME, noise.version).tags
    assert tags["lstep.decision"] == CHALLENGER
    assert tags["lstep.compared_with_version"] == good.version


def test_a_retrain_better_by_noise_only_is_challenger_and_says_so(store):
    # given the same recipe retrained on a fresh sample: a higher PR-AUC on the slice, by chance
    _, client, versions = store
    retrained, first = versions["retrained"], versions["first"]
    assert retrained.new.pr_auc > retrained.champion.pr_auc  # the case under test

    # then the gain is within the paired bootstrap's noise: it stays challenger, and why is kept
    assert retrained.gain.lower <= 0 < retrained.gain.observed
    assert retrained.alias == CHALLENGER
    assert str(current_champion(client, RETRAINED).version) == first.version
    assert "within noise" in retrained.reason
    tags = client.get_model_version(RETRAINED, retrained.version).tags
    assert tags["lstep.decision_reason"] == retrained.reason
    assert float(tags["lstep.pr_auc_gain"]) == pytest.approx(retrained.gain.observed, abs=1e-6)
    assert float(tags["lstep.pr_auc_gain_lower_95"]) == pytest.approx(
        retrained.gain.lower, abs=1e-6
    )
    assert tags["lstep.pr_auc_gain_resamples"] == "1000"


def test_promote_then_roll_back_records_who_and_why(store):
    # given v2 forced to champion, then rolled back to v1
    uri, client, versions = store
    good, noise = versions["good"].version, versions["noise"].version
    at = datetime(2026, 7, 1, 9, 30, tzinfo=UTC)
    forced = promote(uri, noise, reason="A/B test", actor="ana", at=at, name=NAME)
    rolled = promote(uri, good, reason="A/B test lost", actor="ben", at=at, name=NAME)

    # then the champion is v1 again and each step left its tags
    assert str(current_champion(client, NAME).version) == good
    assert (forced.previous_version, rolled.previous_version) == (good, noise)
    forced_tags = client.get_model_version(NAME, noise).tags
    assert forced_tags["lstep.promoted_by"] == "ana"
    assert forced_tags["lstep.promotion_reason"] == "A/B test"
    assert forced_tags["lstep.replaced_by_version"] == good
    rolled_tags = client.get_model_version(NAME, good).tags
    assert rolled_tags["lstep.promoted_by"] == "ben"
    assert rolled_tags["lstep.promoted_at"] == "2026-07-01T09:30:00+00:00"
    assert rolled_tags["lstep.replaced_version"] == noise
    # and v2 lost its challenger alias when it was promoted
    assert CHALLENGER not in client.get_registered_model(NAME).aliases


def test_promote_rejects_an_unknown_version_and_an_empty_reason(store):
    # given the store
    uri, _, _ = store
    at = datetime(2026, 7, 1, tzinfo=UTC)

    # when / then
    with pytest.raises(ValueError, match=r"has no version 99 \(versions: \[1, 2\]\)"):
        promote(uri, 99, reason="x", actor="ana", at=at, name=NAME)
    with pytest.raises(ValueError, match="reason"):
        promote(uri, 1, reason=" ", actor="ana", at=at, name=NAME)


@pytest.mark.slow
def test_a_champion_logged_before_the_feature_frame_contract_is_still_scored(
    tracking_uri, monkeypatch
):
    # given a version logged with the earlier signature (every number double)
    legacy = {"int": DataType.double, "float": DataType.double}
    legacy |= {"bool": DataType.boolean, "category": DataType.string}

    def earlier_schema(feature_dtypes):
        return Schema([ColSpec(legacy[dtype], name) for name, dtype in feature_dtypes.items()])

    model = _fit(frame_seed=40, signal=1.0, rounds=20)
    test = feature_frame(300, weekly_dates(date(2026, 3, 1), 2), seed=42)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with monkeypatch.context() as patch:
            patch.setattr("models.pyfunc.input_schema", earlier_schema)
            experiment = ensure_experiment(client, "legacy", tracking_uri)
            with mlflow.start_run(experiment_id=experiment):
                example = test.head(5)
                info = log_churn_model(model, input_example=example, registered_model_name=NAME)
        uri = f"models:/{NAME}/{info.registered_model_version}"
        declared = mlflow.pyfunc.load_model(uri).metadata.get_input_schema().input_dict()
        assert declared["active_days_7d"].type == DataType.double
        # when the registry scores the new test slice with it
        score, p_churn = score_version(uri, "1", test, test["churned"].to_numpy())
    finally:
        mlflow.set_tracking_uri(None)
    # then it scores the feature frame as the model does
    np.testing.assert_array_equal(p_churn, model.predict(test)["p_churn"].to_numpy())
    assert score.pr_auc == pytest.approx(pr_auc(test["churned"], p_churn))
