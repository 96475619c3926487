"""Registry: champion/challenger decisions on the same test slice, and promotion / rollback."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime

import mlflow
import pytest

from models.churn import ChurnModel
from models.metrics import expected_calibration_error, pr_auc
from models.pyfunc import log_churn_model
from tests.training.frames import feature_frame, weekly_dates
from training.registry import (
    CHALLENGER,
    CHAMPION,
    SliceScore,
    current_champion,
    decide,
    promote,
    register_decision,
)
from training.tracking import ensure_experiment

NAME = "lstep-churn-test"
PARAMS = {"num_leaves": 7, "learning_rate": 0.1, "num_threads": 1, "min_data_in_leaf": 20}


@pytest.mark.parametrize(
    ("new", "champion", "alias", "reason"),
    [
        ((0.60, 0.02), None, CHAMPION, "no champion yet"),
        ((0.61, 0.02), (0.60, 0.02), CHAMPION, "beats 0.6000"),
        ((0.61, 0.024), (0.60, 0.02), CHAMPION, "beats"),
        ((0.60, 0.01), (0.60, 0.02), CHALLENGER, "not higher"),
        ((0.59, 0.01), (0.60, 0.02), CHALLENGER, "not higher"),
        ((0.70, 0.03), (0.60, 0.02), CHALLENGER, "ECE 0.0300 is worse"),
    ],
)
def test_decide(new, champion, alias, reason):
    # given the new version's and the champion's scores on the same slice
    new_score = SliceScore("2", *new)
    champion_score = SliceScore("1", *champion) if champion else None

    # when
    decided, why = decide(new_score, champion_score)

    # then
    assert decided == alias
    assert reason in why


def _fit(frame_seed: int, signal: float, rounds: int) -> ChurnModel:
    dates = weekly_dates(date(2026, 2, 1), 2)
    train = feature_frame(400, dates, seed=frame_seed, signal=signal)
    cal = feature_frame(400, dates, seed=frame_seed + 1, signal=signal)
    return ChurnModel.fit(
        train, train["churned"], cal, cal["churned"], params=PARAMS, num_boost_round=rounds
    )


@pytest.fixture(scope="module")
def store(migrated_mlflow_db, tmp_path_factory):
    """A SQLite tracking store holding v1 (a real model) and v2 (a model of noise)."""
    path = tmp_path_factory.mktemp("registry") / "mlflow.db"
    shutil.copyfile(migrated_mlflow_db, path)
    uri = f"sqlite:///{path}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = ensure_experiment(client, "registry-test", uri)
    test = feature_frame(500, weekly_dates(date(2026, 4, 1), 2), seed=50)
    versions = {}
    for label, model in (("good", _fit(10, 1.0, 30)), ("noise", _fit(20, 0.0, 30))):
        with mlflow.start_run(experiment_id=experiment_id):
            info = log_churn_model(model, input_example=test.head(5), registered_model_name=NAME)
        p = model.predict(test)["p_churn"]
        score = SliceScore(
            str(info.registered_model_version),
            pr_auc(test["churned"], p),
            expected_calibration_error(test["churned"], p),
        )
        versions[label] = register_decision(
            client, score.version, score, test_frame=test, churned=test["churned"], name=NAME
        )
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
