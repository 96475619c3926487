"""MLflow plumbing: experiments with their artifact location, nested trial runs, flat params."""

from __future__ import annotations

from datetime import datetime

import mlflow
import optuna
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from training.tracking import (
    TrialRunLogger,
    default_artifact_location,
    ensure_experiment,
    flat_params,
)
from training.tuning import TuningConfig


@pytest.fixture
def client(tracking_uri):
    return tracking_uri, mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def test_sqlite_experiments_keep_artifacts_beside_the_database(client, tmp_path):
    # given a SQLite tracking URI
    uri, mlflow_client = client

    # when an experiment is created, then asked for again
    first = ensure_experiment(mlflow_client, "lstep-churn", uri)
    again = ensure_experiment(mlflow_client, "lstep-churn", uri)

    # then it is the same experiment, with artifacts in <db dir>/mlartifacts
    assert first == again
    location = mlflow_client.get_experiment(first).artifact_location
    assert location == (tmp_path / "mlartifacts").resolve().as_uri()
    assert default_artifact_location("postgresql+psycopg://h/db") is None


def test_a_deleted_experiment_is_a_clear_error(client):
    # given a deleted experiment
    uri, mlflow_client = client
    mlflow_client.delete_experiment(ensure_experiment(mlflow_client, "old", uri))

    # when / then
    with pytest.raises(ValueError, match="'old' is deleted"):
        ensure_experiment(mlflow_client, "old", uri)


def _finished_trial(state: optuna.trial.TrialState) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"learning_rate": 0.05, "num_leaves": 15},
        distributions={
            "learning_rate": optuna.distributions.FloatDistribution(0.01, 0.3, log=True),
            "num_leaves": optuna.distributions.IntDistribution(7, 127),
        },
        value=0.61 if state == optuna.trial.TrialState.COMPLETE else None,
        intermediate_values={10: 0.52, 20: 0.58},
        user_attrs={"fold_0_pr_auc": 0.6},
        state=state,
    )


@pytest.mark.parametrize(
    ("state", "has_value"),
    [(optuna.trial.TrialState.COMPLETE, True), (optuna.trial.TrialState.PRUNED, False)],
)
def test_each_trial_is_a_child_run_of_the_training_run(client, state, has_value):
    # given a parent run
    uri, mlflow_client = client
    experiment_id = ensure_experiment(mlflow_client, "e", uri)
    parent = mlflow_client.create_run(experiment_id, run_name="train")
    trial = _finished_trial(state)
    trial.datetime_complete = datetime(2026, 7, 1)

    # when the trial is logged
    TrialRunLogger(mlflow_client, experiment_id, parent.info.run_id)(trial, TuningConfig())

    # then one finished child run carries its params, state and metric history
    children = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
    )
    assert len(children) == 1
    child = children[0]
    assert child.data.params == {"learning_rate": "0.05", "num_leaves": "15"}
    assert child.data.tags["optuna.state"] == state.name
    assert child.info.status == "FINISHED"
    assert ("cv_pr_auc" in child.data.metrics) is has_value
    history = mlflow_client.get_metric_history(child.info.run_id, "cv_intermediate_pr_auc")
    assert [(m.step, m.value) for m in history] == [(10, 0.52), (20, 0.58)]


def test_flat_params_cut_overlong_values_visibly():
    # when
    flat = flat_params({"short": 3, "long": "x" * 7000})

    # then
    assert flat["short"] == "3"
    assert len(flat["long"]) <= 6000 and flat["long"].endswith("[truncated]")
