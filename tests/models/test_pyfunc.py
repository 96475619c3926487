"""Tests for models.pyfunc: input contract, registry round trip in a fresh process, validation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import AnyType
from typer.testing import CliRunner

from features.simulator import SimulationConfig, simulate
from features.windows import feature_dtypes
from models.churn import PREDICTION_COLUMNS
from models.matrix import FeatureFrameError, model_feature_names
from models.pyfunc import (
    RequirementMismatchWarning,
    input_schema,
    load_pyfunc,
    log_churn_model,
    pinned_requirements,
    requirement_mismatches,
    to_pyfunc_input,
)
from serving.cli import app
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


SMALL_LOG = SimulationConfig(customers=300, days=100, seed=5, truth_paths=8)
SERVE_READY_TIMEOUT_S = 120.0
runner = CliRunner()


@pytest.fixture(scope="module")
def lstep_features(tmp_path_factory) -> dict[str, Path]:
    """What `lstep features` writes for a small simulated log, and for it without lessons.

    Without lesson events the lesson counts are missing (nullable ``Int64`` with ``<NA>``), as
    for any log that never had an event type a feature needs.
    """
    folder = tmp_path_factory.mktemp("lstep-features")
    simulate(SMALL_LOG, folder)
    events = pd.read_parquet(folder / "events.parquet")
    no_lessons = events[events["event_type"] != "lesson_completed"]
    no_lessons.to_parquet(folder / "no_lessons.parquet", index=False)
    written = {}
    for name, events_file in (("full", "events.parquet"), ("no_lessons", "no_lessons.parquet")):
        out = folder / f"features_{name}.parquet"
        arguments = ["features", "--events", str(folder / events_file), "--every-days", "30"]
        arguments += ["--customers", str(folder / "customers.parquet"), "--out", str(out)]
        result = runner.invoke(app, arguments)
        assert result.exit_code == 0, result.output
        written[name] = out
    return written


def _windows_style(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame typed as features.windows types it: event-type counts as nullable Int64."""
    typed = frame.copy()
    typed["lessons_7d"] = pd.array(typed["lessons_7d"], dtype="Int64")
    typed.loc[typed.index[0], "lessons_7d"] = pd.NA
    return typed


def _legacy_schema(feature_dtypes: dict[str, str]) -> Schema:
    """The input schema versions logged before this contract have: every number double."""
    types = {"int": "double", "float": "double", "bool": "boolean", "category": "string"}
    return Schema([ColSpec(types[dtype], name) for name, dtype in feature_dtypes.items()])


def test_input_schema_declares_each_column_as_lstep_writes_it(fitted):
    # given the dtypes features.windows writes
    written = feature_dtypes()
    # when
    schema = input_schema(fitted.model.feature_dtypes).input_dict()
    # then every model column is required, counts that are never missing are long, counts that
    # may be missing accept what parquet, CSV and Spark give, the rest keep their one type
    assert list(schema) == model_feature_names()
    assert all(spec.required for spec in schema.values())
    expected = {"int64": DataType.long, "Int64": AnyType(), "float64": DataType.double}
    expected |= {"bool": DataType.boolean, "str": DataType.string}
    assert {name: spec.type for name, spec in schema.items()} == {
        name: expected[written[name]] for name in schema
    }


def test_pyfunc_input_conforms_a_frame_to_an_input_schema(fitted):
    # given a feature frame with int64 counts, a nullable count with a gap, floats and flags
    frame = _windows_style(fitted.test_frame.iloc[:5])
    # when it is conformed to this version's schema and to the schema of older versions
    ours = to_pyfunc_input(frame)
    legacy = to_pyfunc_input(frame, schema=_legacy_schema(fitted.model.feature_dtypes))
    # then
    assert list(ours.columns) == list(legacy.columns) == model_feature_names()
    assert ours["active_days_7d"].dtype == np.int64
    assert legacy["active_days_7d"].dtype == legacy["lessons_7d"].dtype == np.float64
    assert np.isnan(ours["lessons_7d"].iloc[0]) and np.isnan(legacy["lessons_7d"].iloc[0])
    assert ours["risk_inactive_7d"].dtype == legacy["risk_inactive_7d"].dtype == bool
    assert ours["product_tag"].tolist() == frame["product_tag"].tolist()


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


NUMPY = metadata.version("numpy")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"numpy=={NUMPY}", None),
        ("numpy>=1", None),
        ("numpy", None),
        ("numpy==0.0.1", f"logged with numpy==0.0.1, installed {NUMPY}"),
        ("numpy==0.0.1  # a comment after the pin", f"logged with numpy==0.0.1, installed {NUMPY}"),
        (
            "lstep-no-such-distribution==1.0",
            "logged with lstep-no-such-distribution==1.0, not installed",
        ),
        ('numpy==0.0.1; python_version < "3"', None),
        ("", None),
        ("# only a comment", None),
        ("-r other-requirements.txt", None),
        ("https://example.invalid/a.whl", None),
    ],
)
def test_requirement_mismatches_name_each_pin_the_environment_does_not_meet(line, expected):
    # given one line of a model's requirements.txt
    # when it is compared with the installed distributions
    found = requirement_mismatches([line])
    # then an unmet pin is one line naming both versions; anything else is nothing
    assert found == ([] if expected is None else [expected])


@pytest.mark.slow
def test_the_champion_loads_without_mlflows_scan_of_every_installed_file(
    fitted, registry, monkeypatch
):
    # given MLflow's own requirement check (it stats every installed file) made to fail if it runs
    def scan(requirements):
        raise AssertionError(f"MLflow's requirement check ran on {requirements}")

    monkeypatch.setattr(mlflow.pyfunc, "warn_dependency_requirement_mismatches", scan)
    # when the champion is loaded through the registry, any mismatch warning made an error
    with warnings.catch_warnings():
        warnings.simplefilter("error", RequirementMismatchWarning)
        model = load_pyfunc(registry.champion_uri)
    # then it scores as the fitted model (its pins are this environment's: nothing to warn)
    rows = fitted.test_frame.iloc[:20]
    pd.testing.assert_frame_equal(model.predict(rows), fitted.model.predict(rows))


@pytest.mark.slow
def test_a_model_logged_with_another_version_loads_with_a_warning_naming_it(
    fitted, registry, tmp_path
):
    # given the champion's files with lightgbm pinned to a version that is not the installed one
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=registry.champion_uri, dst_path=str(tmp_path)
        )
    )
    requirements = local / "requirements.txt"
    pins = requirements.read_text().splitlines()
    assert any(pin.startswith("lightgbm==") for pin in pins)
    moved = ["lightgbm==0.0.1" if pin.startswith("lightgbm==") else pin for pin in pins]
    requirements.write_text("\n".join(moved) + "\n")
    # when they are loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_pyfunc(str(local))
    # then that pin, and only it, is warned with both versions, and the model still scores
    mismatches = [str(w.message) for w in caught if w.category is RequirementMismatchWarning]
    installed = metadata.version("lightgbm")
    assert mismatches == [f"{local}: logged with lightgbm==0.0.1, installed {installed}"]
    rows = fitted.test_frame.iloc[:5]
    pd.testing.assert_frame_equal(model.predict(rows), fitted.model.predict(rows))


@pytest.mark.slow
def test_registered_champion_loads_in_a_fresh_process_and_predicts_the_same(
    fitted, registry, tmp_path
):
    # given the champion in the registry and a feature frame on disk, typed as lstep types it
    rows = _windows_style(fitted.test_frame.iloc[:300])
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
@pytest.mark.parametrize("log", ["full", "no_lessons"])
def test_the_registered_model_scores_lstep_features_output_as_it_is(
    fitted, registry, lstep_features, log, tmp_path
):
    # given what `lstep features` wrote, read back from parquet, the same through a CSV, and as
    # Arrow hands columns to Spark's pandas UDFs (no pandas metadata: a count with nulls is
    # float64 with NaN)
    written = pd.read_parquet(lstep_features[log])
    written.to_csv(tmp_path / "features.csv", index=False)
    from_csv = pd.read_csv(tmp_path / "features.csv")
    from_arrow = pq.read_table(lstep_features[log]).to_pandas(ignore_metadata=True)
    assert written["lessons_7d"].isna().all() == (log == "no_lessons")
    # when the champion, loaded through the registry, scores them without any conversion
    model = mlflow.pyfunc.load_model(registry.champion_uri)
    scored = [model.predict(frame) for frame in (written, from_csv, from_arrow)]
    # then each is lstep's own scores of the frame
    expected = fitted.model.predict(written)
    for scores in scored:
        pd.testing.assert_frame_equal(scores, expected)


@pytest.mark.slow
def test_an_older_version_scores_a_feature_frame_conformed_to_its_schema(fitted, registry):
    # given a version logged with every number double (before this contract), as a loaded model
    model = mlflow.pyfunc.load_model(registry.champion_uri)
    legacy = _legacy_schema(fitted.model.feature_dtypes)
    model.metadata.signature = ModelSignature(legacy, model.metadata.signature.outputs)
    rows = _windows_style(fitted.test_frame.iloc[:20])
    # when / then the raw frame is refused, the conformed one scores as the model does
    with pytest.raises(MlflowException, match="active_days_7d"):
        model.predict(rows)
    scored = model.predict(to_pyfunc_input(rows, schema=legacy))
    pd.testing.assert_frame_equal(scored, fitted.model.predict(rows))


@pytest.mark.slow
def test_the_loaded_model_names_a_missing_or_mistyped_column(fitted, registry):
    # given the champion loaded through the registry and a feature frame
    model = mlflow.pyfunc.load_model(registry.champion_uri)
    rows = fitted.test_frame.iloc[:10]
    # when a column is missing / a count is fractional / a nullable count is text
    missing = rows.drop(columns="active_days_7d")
    fractional = rows.assign(events_7d=rows["events_7d"] + 0.5)
    text = rows.assign(lessons_7d="many")
    # then each error names the column; extra columns are dropped
    with pytest.raises(MlflowException, match=r"missing inputs \['active_days_7d'\]"):
        model.predict(missing)
    with pytest.raises(MlflowException, match="column events_7d"):
        model.predict(fractional)
    with pytest.raises(FeatureFrameError, match="column lessons_7d"):
        model.predict(text)
    scored = model.predict(rows.assign(customer_id="extra columns are dropped"))
    pd.testing.assert_frame_equal(scored, fitted.model.predict(rows))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _json_value(value: object) -> object:
    """A frame value as JSON keeps it exactly: None for missing, Python numbers, ISO dates."""
    if pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


def _dataframe_split(frame: pd.DataFrame) -> dict:
    rows = [[_json_value(value) for value in row] for row in frame.itertuples(index=False)]
    return {"columns": list(frame.columns), "data": rows}


def _wait_until_ready(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVE_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve not ready in {SERVE_READY_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_frame_lstep_features_wrote(
    fitted, registry, lstep_features, tmp_path
):
    # given the champion behind a real `mlflow models serve` and a frame `lstep features` wrote
    # (with missing lesson counts), sent as it is in the dataframe_split JSON format
    written = pd.read_parquet(lstep_features["no_lessons"]).head(40)
    port, log = _free_port(), tmp_path / "serve.log"
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve"]
    command += ["-m", registry.champion_uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    environment = {**os.environ, **TELEMETRY_ENV, "MLFLOW_TRACKING_URI": registry.tracking_uri}
    # The server execs `uvicorn` by name: this environment's scripts come first on PATH.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    with log.open("w") as output:
        server = subprocess.Popen(
            command,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_ready(port, server, log)
        # when
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": _dataframe_split(written)},
            timeout=60.0,
        )
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    # then it answers lstep's own scores of the frame
    assert response.status_code == 200, response.text
    served = pd.DataFrame(response.json()["predictions"])
    expected = fitted.model.predict(written)
    np.testing.assert_array_equal(served[list(PREDICTION_COLUMNS)].to_numpy(), expected.to_numpy())
