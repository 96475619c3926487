"""Tests for models.pyfunc: input contract, registry round trip in a fresh process, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.churn import PREDICTION_COLUMNS, FeatureFrameError, model_feature_names
from models.pyfunc import log_churn_model, pinned_requirements, to_pyfunc_input
from serving.settings import TELEMETRY_ENV

MODEL_NAME = "lstep-churn-test"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter whose working directory is a temporary folder. It first removes the
# editable-install finder, so the repository packages can only come from the model's code_paths.
FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(f.__module__)]
    import importlib.util
    assert importlib.util.find_spec("models") is None, "repo packages must not be importable"
    import mlflow
    import pandas as pd
    model = mlflow.pyfunc.load_model(sys.argv[1])
    predictions = model.predict(pd.read_parquet(sys.argv[2]))
    predictions.to_parquet(sys.argv[3])
    print(json.dumps({"models_file": sys.modules["models"].__file__}))
    """
)


@dataclass(frozen=True)
class Registry:
    """A throwaway sqlite tracking/registry store holding the fitted model as ``champion``."""

    tracking_uri: str
    champion_uri: str
    folder: Path


@pytest.fixture(scope="module")
def registry(fitted, tmp_path_factory):
    """Log, register and alias the fitted model once (creating a store takes seconds)."""
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.create_experiment("models", artifact_location=(folder / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_churn_model(
                fitted.model,
                input_example=fitted.test_frame.iloc[:200],
                registered_model_name=MODEL_NAME,
            )
        MlflowClient().set_registered_model_alias(
            MODEL_NAME, "champion", info.registered_model_version
        )
        yield Registry(uri, f"models:/{MODEL_NAME}@champion", folder)
        mlflow.set_tracking_uri(None)


def _windows_style(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame typed as features.windows types it: event-type counts as nullable Int64."""
    typed = frame.copy()
    typed["lessons_7d"] = pd.array(typed["lessons_7d"], dtype="Int64")
    typed.loc[typed.index[0], "lessons_7d"] = pd.NA
    return typed


def test_pyfunc_input_has_one_numeric_type_flags_and_string_tags(fitted):
    # given a feature frame with int64 counts, a nullable count with a gap, floats and flags
    frame = _windows_style(fitted.test_frame.iloc[:5])
    # when
    pyfunc_input = to_pyfunc_input(frame)
    # then
    assert list(pyfunc_input.columns) == model_feature_names()
    kinds = {name: pyfunc_input[name].dtype.kind for name in pyfunc_input}
    assert kinds["active_days_7d"] == kinds["lessons_7d"] == kinds["mrr"] == "f"
    assert kinds["risk_inactive_7d"] == "b"
    assert pyfunc_input["product_tag"].tolist() == frame["product_tag"].tolist()
    assert np.isnan(pyfunc_input["lessons_7d"].iloc[0])


def test_pyfunc_input_refuses_a_flag_without_a_value(fitted):
    # given a flag column with a missing value
    frame = fitted.test_frame.iloc[:3].copy()
    frame["risk_inactive_7d"] = pd.array([True, None, False], dtype="boolean")
    # when / then
    with pytest.raises(FeatureFrameError, match=r"missing values \{'risk_inactive_7d': 1\}"):
        to_pyfunc_input(frame)


def test_pip_requirements_are_pinned_to_the_installed_versions():
    # given / when
    requirements = pinned_requirements()
    # then
    assert all("==" in line for line in requirements)
    assert f"mlflow=={mlflow.__version__}" in requirements
    assert any(line.startswith("venn-abers==") for line in requirements)


@pytest.mark.slow
def test_registered_champion_loads_in_a_fresh_process_and_predicts_the_same(
    fitted, registry, tmp_path
):
    # given the champion in the registry and a scoring frame on disk
    rows = to_pyfunc_input(_windows_style(fitted.test_frame.iloc[:300]))
    rows.to_parquet(tmp_path / "in.parquet")
    expected = fitted.model.predict(rows)
    # when a new interpreter, outside the repository, loads it by alias and scores the frame
    environment = {**os.environ, **TELEMETRY_ENV, "MLFLOW_TRACKING_URI": registry.tracking_uri}
    environment.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, registry.champion_uri, "in.parquet", "out"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # then
    assert completed.returncode == 0, completed.stderr[-3000:]
    models_file = json.loads(completed.stdout.strip().splitlines()[-1])["models_file"]
    assert not models_file.startswith(str(REPO_ROOT))
    fresh = pd.read_parquet(tmp_path / "out")
    assert list(fresh.columns) == list(PREDICTION_COLUMNS)
    np.testing.assert_array_equal(fresh.to_numpy(), expected.to_numpy())


@pytest.mark.slow
def test_the_loaded_model_names_a_missing_or_mistyped_column(fitted, registry):
    # given the champion loaded through the registry
    model = mlflow.pyfunc.load_model(registry.champion_uri)
    rows = to_pyfunc_input(fitted.test_frame.iloc[:10])
    # when a column is missing / when a count comes as int64 instead of the contract's float64
    missing = rows.drop(columns="active_days_7d")
    mistyped = rows.assign(events_7d=rows["events_7d"].astype("int64"))
    # then
    with pytest.raises(MlflowException, match=r"missing inputs \['active_days_7d'\]"):
        model.predict(missing)
    with pytest.raises(MlflowException, match="column events_7d"):
        model.predict(mistyped)
    scored = model.predict(rows.assign(customer_id="extra columns are dropped"))
    pd.testing.assert_frame_equal(scored, fitted.model.predict(rows))
