"""The churn model as one MLflow pyfunc model: batch, BentoML and Spark load the same thing.

The input contract (``to_pyfunc_input``): the model columns, numbers (catalog ``int`` and ``float``)
as float64 with NaN for missing, flags as bool, ``product_tag`` as a string. One numeric type for
counts is deliberate: MLflow enforces the signature before ``predict`` and refuses both int64 into a
``double`` column and a missing value (NaN or ``pd.NA``) in a ``long`` column, so a feature frame
whose counts are int64 on one day and nullable on another (``features.windows`` types counts that
need an event type as nullable ``Int64``) would fail one way or the other. Callers therefore pass
``to_pyfunc_input(feature_frame)``; a frame in another shape gets MLflow's error naming the column.

``log_churn_model`` saves the ``ChurnModel`` files as the artifact ``churn_model`` and logs
``ChurnPyfunc`` with:

- a signature inferred from ``to_pyfunc_input(input_example)`` (every column ``double``, ``boolean``
  or ``string``, all required) and the four output columns. MLflow enforces it before ``predict``:
  a missing or mistyped column is an ``MlflowException`` that names it; extra columns are dropped.
  ``predict`` validates again (``to_model_matrix``), so a caller that bypasses MLflow's
  enforcement still gets a ``FeatureFrameError`` naming every bad column;
- explicit, pinned ``pip_requirements`` (the installed versions of what ``predict`` imports), so
  logging neither resolves dependencies nor touches the network;
- ``code_paths`` with copies of the ``models`` and ``features`` packages, so a process without this
  repository on ``sys.path`` can still unpickle ``ChurnPyfunc`` and import what it uses.

Loading: ``mlflow.pyfunc.load_model("models:/lstep-churn@champion")``, then
``.predict(to_pyfunc_input(frame))`` returns ``p_churn``, ``p_low``, ``p_high`` and
``confidence`` (see ``models.churn``), indexed like the input.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from models.churn import ChurnModel, FeatureFrameError, model_feature_dtypes, to_model_matrix

ARTIFACT_KEY = "churn_model"
INPUT_EXAMPLE_ROWS = 5
PREDICT_DISTRIBUTIONS: tuple[str, ...] = (
    "mlflow",
    "lightgbm",
    "numpy",
    "pandas",
    "pandera",
    "pydantic",
    "pyyaml",
    "scikit-learn",
    "venn-abers",
)
"""What ``ChurnPyfunc.predict`` imports, directly or through ``models``/``features``."""
CODE_PACKAGES: tuple[str, ...] = ("models", "features")


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper around a saved ``ChurnModel`` (artifact ``churn_model``)."""

    def __init__(self) -> None:
        self._model: ChurnModel | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the saved model directory that MLflow copied next to the MLmodel file."""
        self._model = ChurnModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    @property
    def churn_model(self) -> ChurnModel | None:
        """The loaded ``ChurnModel`` (None before ``load_context``), for TreeSHAP explanations."""
        return self._model

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Score a feature frame.

        Returns:
            ``p_churn``, ``p_low``, ``p_high``, ``confidence``, indexed like ``model_input``.

        Raises:
            RuntimeError: when called before ``load_context``.
            FeatureFrameError: naming every missing or mistyped model column.
        """
        if self._model is None:
            raise RuntimeError("ChurnPyfunc.predict called before load_context")
        return self._model.predict(model_input)


_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def mlflow_uris(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``tracking_uri`` for a while.

    ``mlflow.pyfunc.load_model("models:/...")`` and fluent runs resolve through the global URIs;
    restoring the previous ones keeps a host process (the service, a notebook, tests) unaffected.
    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` into the
    environment, which ``Settings`` reads: those are put back exactly as they were (unset stays
    unset), or a later ``Settings()`` in the process would point at MLflow's default store in the
    working directory instead of the workspace's.
    """
    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    previous_environ = {name: os.environ.get(name) for name in _URI_VARIABLES}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)
        for name, value in previous_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pinned_requirements() -> list[str]:
    """``name==version`` of each distribution ``predict`` needs, as installed here."""
    return [f"{name}=={metadata.version(name)}" for name in PREDICT_DISTRIBUTIONS]


def to_pyfunc_input(frame: pd.DataFrame, model: ChurnModel | None = None) -> pd.DataFrame:
    """The model columns of a feature frame in the pyfunc's input types (see the module doc).

    Args:
        frame: a feature frame; extra columns (customer_id, as_of, ...) are left out.
        model: whose columns to take; the catalog's when None.

    Raises:
        FeatureFrameError: when ``frame`` lacks a model column, has a mistyped one, or has a
            missing value in a flag (a flag is true or false).
    """
    feature_dtypes = model.feature_dtypes if model is not None else model_feature_dtypes()
    matrix = to_model_matrix(frame, feature_dtypes=feature_dtypes)
    check_flags_present(matrix, feature_dtypes)
    columns: dict[str, pd.Series] = {}
    for name, dtype in feature_dtypes.items():
        if dtype == "bool":
            columns[name] = matrix[name].astype(bool)
        elif dtype == "category":
            columns[name] = matrix[name].astype(object).where(matrix[name].notna(), None)
        else:
            columns[name] = matrix[name]
    return pd.DataFrame(columns, index=frame.index)


def check_flags_present(frame: pd.DataFrame, feature_dtypes: Mapping[str, str]) -> None:
    """Refuse missing values in flag columns, as the pyfunc's input contract does.

    Args:
        frame: a feature frame or model matrix holding every flag column of ``feature_dtypes``.
        feature_dtypes: model columns and their catalog dtypes (flags are ``bool``).

    Raises:
        FeatureFrameError: naming each flag column with missing values and how many.
    """
    flags = [name for name, dtype in feature_dtypes.items() if dtype == "bool"]
    missing_flags = frame[flags].isna().sum()
    missing_flags = missing_flags[missing_flags > 0]
    if not missing_flags.empty:
        raise FeatureFrameError(
            f"feature frame: flag columns with missing values {missing_flags.to_dict()}; "
            "a flag must be true or false"
        )


def _required_signature(example: pd.DataFrame, predictions: pd.DataFrame) -> ModelSignature:
    """Infer the signature, then mark every input required (MLflow makes NaN columns optional)."""
    inferred = infer_signature(example, predictions)
    inputs = Schema(
        [ColSpec(type=spec.type, name=spec.name, required=True) for spec in inferred.inputs.inputs]
    )
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


def _copy_code_packages(destination: Path) -> list[str]:
    """Copy the packages the pyfunc imports (without caches) and return their paths."""
    copied = []
    for package in CODE_PACKAGES:
        source = Path(importlib.import_module(package).__file__).parent
        target = destination / package
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        copied.append(str(target))
    return copied


def log_churn_model(
    model: ChurnModel,
    *,
    name: str = "model",
    input_example: pd.DataFrame,
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log ``model`` as an MLflow pyfunc model in the active run (or a new one).

    Args:
        model: the fitted churn model.
        name: the logged model's name within the run.
        input_example: a feature frame (e.g. some rows of the test slice, with missing values if
            the data has them); ``to_pyfunc_input`` of it defines the signature, and its first
            rows are stored as the input example.
        registered_model_name: also register a new version under this name when given.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...).

    Raises:
        FeatureFrameError: when ``input_example`` lacks a model column or has a mistyped one.
    """
    example = to_pyfunc_input(input_example, model)
    signature = _required_signature(example, model.predict(example))
    with tempfile.TemporaryDirectory(prefix="lstep-churn-") as scratch:
        model_dir = Path(scratch) / ARTIFACT_KEY
        model.save(model_dir)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=ChurnPyfunc(),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            signature=signature,
            input_example=example.head(INPUT_EXAMPLE_ROWS),
            pip_requirements=pinned_requirements(),
            code_paths=_copy_code_packages(Path(scratch) / "code"),
            registered_model_name=registered_model_name,
        )


__all__ = [
    "ARTIFACT_KEY",
    "ChurnPyfunc",
    "check_flags_present",
    "log_churn_model",
    "pinned_requirements",
    "to_pyfunc_input",
]
