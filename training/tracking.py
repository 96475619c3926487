"""MLflow plumbing for training: the experiment, nested trial runs and flat params.

The tracking URI is always passed in (``training`` never reads serving settings). With a SQLite
tracking store and no explicit artifact location, a new experiment keeps its artifacts in
``mlartifacts/`` beside the database file (the LSTEP_HOME layout of DESIGN §2) rather than in
whatever the current directory happens to be.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from training.tuning import TuningConfig

MAX_PARAM_LENGTH = 6000
"""MLflow rejects longer param values; longer ones are cut with a marker (never silently)."""


def default_artifact_location(tracking_uri: str) -> str | None:
    """``file://<sqlite file's dir>/mlartifacts`` for a SQLite URI, else None (server default)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri[len(prefix) :])
    return (database.parent / "mlartifacts").resolve().as_uri()


def ensure_experiment(
    client: mlflow.MlflowClient, name: str, tracking_uri: str, artifact_location: str | None = None
) -> str:
    """Return the id of experiment ``name``, creating it (with its artifact location) if needed.

    Raises:
        ValueError: when the experiment exists but is deleted (MLflow would refuse to log to it).
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted; restore it or choose another --experiment"
            )
        return existing.experiment_id
    location = artifact_location or default_artifact_location(tracking_uri)
    return client.create_experiment(name, artifact_location=location)


def flat_params(values: dict[str, object]) -> dict[str, str]:
    """Stringify param values for MLflow, cutting any over MLflow's length limit visibly."""
    flat = {}
    for key, value in values.items():
        text = str(value)
        if len(text) > MAX_PARAM_LENGTH:
            text = text[: MAX_PARAM_LENGTH - 20] + "...[truncated]"
        flat[key] = text
    return flat


class TrialRunLogger:
    """Logs each finished Optuna trial as a child run of the parent training run.

    The child carries the trial's sampled params, its objective value and per-fold scores, the
    intermediate values reported for pruning (as a metric history by step) and its state.
    """

    def __init__(self, client: mlflow.MlflowClient, experiment_id: str, parent_run_id: str) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id

    def __call__(self, trial: optuna.trial.FrozenTrial, config: TuningConfig) -> None:
        """Create, fill and close the trial's nested run."""
        run = self._client.create_run(
            self._experiment_id,
            run_name=f"trial-{trial.number:03d}",
            tags={MLFLOW_PARENT_RUN_ID: self._parent_run_id, "lstep.kind": "optuna-trial"},
        )
        finished = trial.datetime_complete or trial.datetime_start
        now_ms = int(finished.timestamp() * 1000) if finished else 0
        metrics = [
            Metric(f"cv_intermediate_{config.metric}", float(value), now_ms, int(step))
            for step, value in sorted(trial.intermediate_values.items())
        ]
        if trial.value is not None:
            metrics.append(Metric(f"cv_{config.metric}", float(trial.value), now_ms, 0))
        metrics += [
            Metric(key, float(value), now_ms, 0)
            for key, value in trial.user_attrs.items()
            if isinstance(value, int | float)
        ]
        params = [Param(k, v) for k, v in flat_params(trial.params).items()]
        tags = [
            RunTag("optuna.trial_number", str(trial.number)),
            RunTag("optuna.state", trial.state.name),
        ]
        self._client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
        status = "FAILED" if trial.state == optuna.trial.TrialState.FAIL else "FINISHED"
        self._client.set_terminated(run.info.run_id, status=status)
