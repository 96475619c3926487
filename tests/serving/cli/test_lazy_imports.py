"""The CLI starts fast: importing it, or the modules every command shares, loads no heavy library.

Each check runs in a fresh interpreter: in the test process the fixtures have imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("mlflow", "lightgbm", "shap", "bentoml", "duckdb", "sklearn", "matplotlib")
FRAMES = ("pandas", "pandera", "pyarrow", "sqlalchemy")
"""The frame and store libraries: ~1 s of imports that `lstep --help` and typos need not pay."""


def _imported_heavy(module: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps([name for name in {heavy!r} if name in sys.modules]))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout)


@pytest.mark.parametrize(
    "module",
    ["serving.cli", "serving.cli.render", "serving.cli.explain_inputs", "models.pyfunc"],
)
def test_importing_a_cli_module_loads_no_heavy_library_it_does_not_need(module):
    # given a fresh interpreter / when the module is imported
    imported = _imported_heavy(module)
    # then only what the module itself needs is loaded: the churn model needs LightGBM (which
    # imports scikit-learn; explain imports the model when it loads one); nothing needs MLflow
    # to import, and explain reads its snapshot row without DuckDB
    needed = {"models.pyfunc": ["lightgbm", "sklearn"]}.get(module, [])
    assert imported == needed


def test_a_snapshots_path_needs_no_feature_builder():
    # given a fresh interpreter / when the snapshot module (paths, listing, writing) is imported
    imported = _imported_heavy("serving.infra.snapshots", ("duckdb", "features.windows"))
    # then the feature builder and its DuckDB wait for the one reader that validates a whole
    # snapshot (latest_feature_snapshot): `lstep explain` reads one row with pandas
    assert imported == []


@pytest.mark.parametrize("module", ["serving.cli", "serving.cli.render"])
def test_the_cli_root_loads_no_frame_library(module):
    # given a fresh interpreter / when the CLI (every command's parser) or its renderer is imported
    imported = _imported_heavy(module, FRAMES)
    # then pandas, pandera, pyarrow and SQLAlchemy wait for the command that reads a frame
    assert imported == []


def test_the_pure_assess_path_does_not_load_mlflow():
    # given / when the one path from features to answers is imported
    imported = _imported_heavy("serving.core.assess")
    # then MLflow (the registry's library) is not part of it
    assert "mlflow" not in imported


def test_a_learners_status_does_not_load_the_rules_engine():
    # given a fresh interpreter / when what `lstep status` uses is imported
    code = "import sys, serving.app.status; print('rules.engine' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    # then the rules package (its engine, schemas and YAML loading) is not: overrides name
    # ``RuleSet`` only for typing
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["serving.app.status", "serving.infra.workspace"])
def test_reading_the_store_does_not_load_pandera(module):
    # given a fresh interpreter / when what `lstep status` and a stored `lstep kpis` use (the
    # store, its reads typed by serving.core.frames.StoredColumns) is imported
    imported = _imported_heavy(module, ("pandera",))
    # then pandera (and the pyspark.pandas it pulls in) waits for a command that validates
    assert imported == []


LIGHTGBM_ALONE = """
import json, sys
from serving.cli.explain_inputs import import_lightgbm_alone
import_lightgbm_alone()
import lightgbm
alone = "sklearn" not in sys.modules
booster = lightgbm.Booster(model_str=BOOSTER)  # the Booster lstep uses still loads and predicts
prediction = float(booster.predict([[0.0], [1.0]])[1])
try:
    lightgbm.LGBMClassifier()
    wrappers = "built"
except Exception as error:
    wrappers = str(error)
import sklearn  # imports as usual afterwards
print(json.dumps({"alone": alone, "prediction": prediction, "wrappers": wrappers}))
"""


def _lightgbm_alone(prelude: str = "") -> dict:
    import lightgbm
    import numpy as np

    data = lightgbm.Dataset(np.array([[0.0], [1.0]] * 20), label=np.array([0.0, 1.0] * 20))
    params = {"objective": "regression", "verbose": -1, "min_data_in_leaf": 1}
    booster = lightgbm.train(params, data, num_boost_round=2)
    code = f"{prelude}\nBOOSTER = {booster.model_to_string()!r}\n{LIGHTGBM_ALONE}"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_explain_imports_lightgbm_without_scikit_learn():
    # given a fresh interpreter / when explain imports LightGBM alone
    ran = _lightgbm_alone()
    # then scikit-learn was not imported with it, the Booster still predicts, LightGBM's
    # scikit-learn wrappers refuse (naming scikit-learn), and scikit-learn imports afterwards
    assert ran["alone"] is True
    assert ran["prediction"] > 0.5
    assert "scikit-learn" in ran["wrappers"]


def test_lightgbm_imported_before_keeps_its_scikit_learn_wrappers():
    # given a process that imported scikit-learn before (a notebook, a training run)
    ran = _lightgbm_alone(prelude="import sklearn")
    # when explain asks for LightGBM alone / then it changed nothing: the wrappers are built
    assert ran["wrappers"] == "built"
