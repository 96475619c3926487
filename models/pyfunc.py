"""The churn model as one MLflow pyfunc model: batch, BentoML and Spark load the same thing.

The input contract is what lstep writes: ``mlflow.pyfunc.load_model(uri).predict(frame)`` takes
the output of ``lstep features`` as it is (read back from parquet, from a CSV by pandas, or as
Spark columns), with no conversion step. MLflow enforces the signature before ``predict`` and its
rules decide the column types (``mlflow.models.utils._enforce_mlflow_datatype``): a ``double``
column refuses int64 (only int8..int32 widen safely), a ``long`` column refuses float64 and any
missing value. So each catalog dtype is declared as the type lstep writes it (``input_schema``):

- ``float`` -> ``double`` (float64, NaN for missing);
- ``int`` that every event stream has (``needs: []``, written ``int64``, never missing) -> ``long``;
- ``int`` that needs an event type (written nullable ``Int64``: missing when the log never had that
  type before the day) -> ``Any``: MLflow's types cannot say "an integer that may be missing",
  and the same column arrives as ``Int64`` from parquet, ``int64`` or ``float64`` (with NaN) from a
  CSV or Spark. ``ChurnPyfunc.predict`` then checks it (``to_model_matrix``: numeric, whole);
- ``bool`` -> ``boolean``; ``category`` (``product_tag``) -> ``string``.

Every column is required; extra columns (``customer_id``, ``as_of``) are dropped by MLflow. A
missing or mistyped column is an ``MlflowException`` naming it, and ``predict`` validates again
(``to_model_matrix``), so a caller that bypasses MLflow's enforcement still gets a
``FeatureFrameError`` naming every bad column. ``to_pyfunc_input`` conforms a frame to an input
schema, for versions logged before this contract (every number ``double``).

``log_churn_model`` saves the ``ChurnModel`` files as the artifact ``churn_model`` and logs
``ChurnPyfunc`` with that signature, explicit pinned ``pip_requirements`` (the installed versions
of what ``predict`` imports, so logging neither resolves dependencies nor touches the network) and
``code_paths`` with copies of the ``models`` and ``features`` packages (a process without this
repository on ``sys.path`` can still unpickle ``ChurnPyfunc``).

Loading: ``mlflow.pyfunc.load_model("models:/lstep-churn@champion").predict(features)`` returns
``p_churn``, ``p_low``, ``p_high`` and ``confidence`` (see ``models.churn``), indexed like the
input.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from packaging.requirements import InvalidRequirement, Requirement

from features.catalog import load_catalog
from models.churn import ChurnModel
from models.matrix import FeatureFrameError, model_feature_dtypes, to_model_matrix

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from mlflow.pyfunc import PyFuncModel
    from mlflow.types import Schema

# MLflow is imported where it is used, never at import time: ``serving.core.assess`` imports this
# module for ``check_flags_present``, and ``lstep explain`` must not pay MLflow's import (~1 s).

ARTIFACT_KEY = "churn_model"
_REQUIREMENTS_FILE = "requirements.txt"  # MLflow's name for a model's pip requirements
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


def __getattr__(name: str) -> Any:
    """``ChurnPyfunc``, defined on first use (PEP 562), as MLflow's base class needs MLflow."""
    if name == "ChurnPyfunc":
        return _churn_pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _churn_pyfunc_class() -> type:
    """``ChurnPyfunc``, defined once and then a plain module attribute."""
    defined = globals().get("ChurnPyfunc")
    if defined is None:
        globals()["ChurnPyfunc"] = defined = _define_churn_pyfunc()
    return defined


def _define_churn_pyfunc() -> type:
    """The ``ChurnPyfunc`` class, named ``models.pyfunc.ChurnPyfunc`` as pickles refer to it."""
    import mlflow.pyfunc

    class ChurnPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow wrapper around a saved ``ChurnModel`` (artifact ``churn_model``)."""

        def __init__(self) -> None:
            self._model: ChurnModel | None = None

        def load_context(self, context: Any) -> None:
            """Load the saved model directory that MLflow copied next to the MLmodel file."""
            self._model = ChurnModel.load(Path(context.artifacts[ARTIFACT_KEY]))

        @property
        def churn_model(self) -> ChurnModel | None:
            """The loaded ``ChurnModel`` (None before ``load_context``), for TreeSHAP."""
            return self._model

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
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
            model = self._model
            return model.predict(numbers_from_objects(model_input, model.feature_dtypes))

    ChurnPyfunc.__qualname__ = "ChurnPyfunc"
    return ChurnPyfunc


def numbers_from_objects(frame: pd.DataFrame, feature_dtypes: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` with object-typed count columns made numeric, other columns untouched.

    MLflow hands an ``Any`` column over as the Python values it saw: a nullable ``Int64`` count
    with a gap arrives as objects (ints and ``<NA>``), which ``to_model_matrix`` would refuse.
    Values that are not numbers are left as they are, so its error still names the column.
    """
    converted = {}
    for name, dtype in feature_dtypes.items():
        if dtype == "int" and name in frame and frame[name].dtype == object:
            try:
                converted[name] = pd.to_numeric(frame[name])
            except (TypeError, ValueError):
                continue
    return frame.assign(**converted) if converted else frame


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
    import mlflow

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


def load_pyfunc(uri: str) -> PyFuncModel:
    """``mlflow.pyfunc.load_model(uri)``, its requirements checked by ``requirement_mismatches``.

    MLflow's own check maps every installed distribution's files to their modules before it
    compares a single version (a ``stat`` of each file: 0.1-0.4 s of each load, which a 1M-learner
    batch day pays too). The requirements lstep logs are ``name==version`` pins
    (``pinned_requirements``), compared here with the installed versions in milliseconds; each
    one the environment does not meet is a warning naming both versions.
    """
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    model = mlflow.pyfunc.load_model(local, suppress_warnings=True)
    requirements = Path(local) / _REQUIREMENTS_FILE
    if requirements.is_file():
        for mismatch in requirement_mismatches(requirements.read_text().splitlines()):
            warnings.warn(f"{uri}: {mismatch}", RequirementMismatchWarning, stacklevel=2)
    return model


class RequirementMismatchWarning(UserWarning):
    """A loaded model was logged with a version of a distribution other than the installed one."""


def requirement_mismatches(lines: Sequence[str]) -> list[str]:
    """What of a model's ``requirements.txt`` the installed distributions do not meet.

    Args:
        lines: the file's lines; blank ones, comments and lines that are not a requirement
            (a path, a URL, a pip option) are skipped, as MLflow skips them.

    Returns:
        One line per unmet requirement, e.g. "logged with lightgbm==4.5.0, installed 4.7.0"
        or "logged with venn-abers==1.5.4, not installed".
    """
    mismatches = []
    for line in lines:
        try:
            requirement = Requirement(line.split("#", 1)[0].strip())
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            mismatches.append(f"logged with {requirement}, not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            mismatches.append(f"logged with {requirement}, installed {installed}")
    return mismatches


def input_schema(feature_dtypes: Mapping[str, str]) -> Schema:
    """The pyfunc's input schema: each model column as lstep writes it (see the module doc).

    Args:
        feature_dtypes: model columns and their catalog dtypes (``ChurnModel.feature_dtypes``).
    """
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    specs = {spec.name: spec for spec in load_catalog().features}
    column_types = _column_types()
    columns = []
    for name, dtype in feature_dtypes.items():
        spec = specs.get(name)
        always_counted = spec is not None and not spec.needs
        column_type = column_types[dtype] if dtype != "int" or always_counted else AnyType()
        columns.append(ColSpec(type=column_type, name=name, required=True))
    return Schema(columns)


def _column_types() -> dict[str, Any]:
    """MLflow's type of each catalog dtype (an ``int`` that may be missing excepted)."""
    from mlflow.types import DataType

    return {
        "float": DataType.double,
        "int": DataType.long,
        "bool": DataType.boolean,
        "category": DataType.string,
    }


def to_pyfunc_input(
    frame: pd.DataFrame, model: ChurnModel | None = None, *, schema: Schema | None = None
) -> pd.DataFrame:
    """The model columns of a feature frame, each in the type an input schema declares.

    Not needed for a version logged with ``input_schema`` (it takes feature frames as they are);
    a version logged before it declares every number ``double``: pass its schema
    (``loaded.metadata.get_input_schema()``) to score a feature frame with it.

    Args:
        frame: a feature frame; extra columns (customer_id, as_of, ...) are left out.
        model: whose columns to take; the catalog's when None.
        schema: the input schema to conform to; ``input_schema`` of the columns when None.

    Raises:
        FeatureFrameError: when ``frame`` lacks a model column, has a mistyped one, or has a
            missing value in a flag (a flag is true or false).
    """
    feature_dtypes = model.feature_dtypes if model is not None else model_feature_dtypes()
    matrix = to_model_matrix(frame, feature_dtypes=feature_dtypes)
    check_flags_present(matrix, feature_dtypes)
    declared = (schema or input_schema(feature_dtypes)).input_dict()
    columns = {
        name: _conformed(matrix[name], declared[name].type if name in declared else None)
        for name in feature_dtypes
    }
    return pd.DataFrame(columns, index=frame.index)


def _conformed(values: pd.Series, declared: object) -> pd.Series:
    """A model-matrix column (float64 numbers and flags, or the Categorical) as ``declared``."""
    from mlflow.types import DataType

    if declared == DataType.boolean:
        return values.astype(bool)
    if declared == DataType.string:
        return values.astype(object).where(values.notna(), None)
    if declared == DataType.long:  # whole numbers: to_model_matrix checked the catalog ints
        return values.astype("Int64" if values.isna().any() else "int64")
    return values  # double, Any or undeclared: float64 with NaN is exact for every number


def check_flags_present(frame: pd.DataFrame, feature_dtypes: Mapping[str, str]) -> None:
    """Refuse missing values in flag columns, as the pyfunc's input contract does.

    Args:
        frame: a feature frame or model matrix holding every flag column of ``feature_dtypes``.
        feature_dtypes: model columns and their catalog dtypes (flags are ``bool``).

    Raises:
        FeatureFrameError: naming each flag column with missing values and how many.
    """
    flags = [name for name, dtype in feature_dtypes.items() if dtype == "bool"]
    dtypes = dict(zip(frame.columns, frame.dtypes, strict=False))
    if all(dtypes.get(name) == np.dtype(bool) for name in flags):
        return  # numpy booleans cannot be missing: a frame's scan cost ~1 ms on one learner
    missing_flags = frame[flags].isna().sum()
    missing_flags = missing_flags[missing_flags > 0]
    if not missing_flags.empty:
        raise FeatureFrameError(
            f"feature frame: flag columns with missing values {missing_flags.to_dict()}; "
            "a flag must be true or false"
        )


def pyfunc_signature(model: ChurnModel, example: pd.DataFrame) -> ModelSignature:
    """``input_schema`` of the model's columns, and the prediction columns ``example`` gives."""
    from mlflow.models import ModelSignature, infer_signature

    # The predictions' schema, inferred as a signature's inputs: inferring it beside the example
    # would also infer (and warn about) the input columns, which input_schema declares instead.
    outputs = infer_signature(model.predict(example)).inputs
    return ModelSignature(inputs=input_schema(model.feature_dtypes), outputs=outputs)


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
        input_example: a feature frame (e.g. some rows of the test slice); its model columns,
            in lstep's types, give the output signature and its first rows are stored as the
            input example.
        registered_model_name: also register a new version under this name when given.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...).

    Raises:
        FeatureFrameError: when ``input_example`` lacks a model column or has a mistyped one.
    """
    import mlflow.pyfunc

    example = to_pyfunc_input(input_example, model)
    signature = pyfunc_signature(model, example)
    with tempfile.TemporaryDirectory(prefix="lstep-churn-") as scratch:
        model_dir = Path(scratch) / ARTIFACT_KEY
        model.save(model_dir)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=_churn_pyfunc_class()(),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            signature=signature,
            input_example=example.head(INPUT_EXAMPLE_ROWS),
            pip_requirements=pinned_requirements(),
            code_paths=_copy_code_packages(Path(scratch) / "code"),
            registered_model_name=registered_model_name,
        )


__all__ = [
    "ARTIFACT_KEY",
    "ChurnPyfunc",  # noqa: F822 (defined on first use: see __getattr__)
    "RequirementMismatchWarning",
    "check_flags_present",
    "input_schema",
    "load_pyfunc",
    "log_churn_model",
    "numbers_from_objects",
    "pinned_requirements",
    "pyfunc_signature",
    "requirement_mismatches",
    "to_pyfunc_input",
]
