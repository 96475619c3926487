"""What ``lstep explain`` reads on a batch day: the snapshot row and the version that scored it.

A batch day already holds the learner's features (the snapshot ``as_of=DAY.parquet``) and the
registered version that scored them (the stored score's ``model_version``). Explaining from those
skips rebuilding the features with DuckDB and loading MLflow's pyfunc machinery, and it explains
the score the batch stored, even after the champion changed. The version's ``ChurnModel`` files
are kept in a local cache (``<LSTEP_HOME>/cache/models``), written through MLflow on first use: a
registered version never changes, so a cached one is never stale (the key includes the registry).

The learner's calibrated scores are the stored ones too (``StoredScoreModel``): the same version
on the same row computes exactly them, and not recomputing them spares loading the Venn-Abers
calibrator; TreeSHAP needs only LightGBM's ``Booster``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from serving.infra.snapshots import snapshot_path
from serving.settings import Settings

if TYPE_CHECKING:
    import numpy as np

    from models.churn import ChurnModel
    from serving.core.assess import AssessOptions

CACHE_SUBDIR = Path("cache") / "models"
MODEL_METADATA = "model.json"
"""``models.churn.METADATA_FILE``, named here so that reading it needs no LightGBM import."""
Warn = Callable[[str], None]


@dataclass(frozen=True)
class VersionModel:
    """A registered version's ``ChurnModel`` (what ``assess`` needs of a champion)."""

    model: ChurnModel | StoredScoreModel
    version: str


class StoredScoreModel:
    """A version's ``ChurnModel`` whose ``predict`` of one learner's row is their stored score.

    The batch stored what ``ChurnModel.predict`` of this version returned for this snapshot
    row; any other frame, and every other attribute (TreeSHAP, feature names), is the model's.
    """

    def __init__(self, model: ChurnModel, customer_id: str, score: Mapping[str, Any]) -> None:
        """Wrap ``model``; ``score``: the learner's stored score row (``PREDICTION_COLUMNS``)."""
        from models.churn import PREDICTION_COLUMNS

        self.model = model
        self.customer_id = customer_id
        self.score = {name: _probability(score[name]) for name in PREDICTION_COLUMNS}

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """The stored score when ``X`` is the learner's one row, else ``ChurnModel.predict``."""
        if "customer_id" not in X or X["customer_id"].tolist() != [self.customer_id]:
            return self.model.predict(X)
        columns = {name: [value] for name, value in self.score.items()}
        return pd.DataFrame(columns, index=X.index, dtype="float64")

    def predict_rows(self, X: pd.DataFrame, values: np.ndarray) -> pd.DataFrame:
        """``predict`` of ``X`` (checked as the model checks it), whose model matrix the caller
        built (``values``: what ``scores_and_contributions`` asks of a champion's model).

        Raises:
            ValueError: when the stored score breaks the prediction contract.
        """
        if "customer_id" not in X or X["customer_id"].tolist() != [self.customer_id]:
            return self.model.predict_rows(X, values)
        return _checked(self.predict(X))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def _checked(predictions: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` after ``ChurnModel.predict_rows``' numpy check."""
    from models.churn import _checked_predictions

    return _checked_predictions(predictions)


def _probability(value: Any) -> float:
    """A stored probability as ``predict`` gives it: float64, NaN for a missing one."""
    return float("nan") if value is None or pd.isna(value) else float(value)


def stored_day_inputs(
    current: Settings, store: Any, customer_id: str, day: date, *, warn: Warn | None = None
) -> tuple[pd.DataFrame, VersionModel] | None:
    """The learner's row of the day's snapshot and the version that scored it, if both exist.

    Args:
        current: the settings (data directory, registry, model name, home for the cache).
        store: the state store (the stored score names the version).
        customer_id: the learner.
        day: the batch day.
        warn: called with a one-line message when the model cache cannot be written.

    Returns:
        None when the day has no snapshot, the learner no stored model score that day, or the
        version is no longer in the registry: the caller then builds the features and loads the
        champion.
    """
    path = snapshot_path(current.data_path, day)
    score = _model_score(store, customer_id, day) if path.is_file() else None
    if score is None:
        return None
    row = pd.read_parquet(path, filters=[("customer_id", "==", customer_id)])
    if len(row) != 1:
        return None
    version = str(score["model_version"])
    model = version_model(current, version, warn=warn)
    if model is None:
        return None
    stored = StoredScoreModel(model, customer_id, score)
    return row.reset_index(drop=True), VersionModel(stored, version)


def import_lightgbm_alone() -> None:
    """Import LightGBM with scikit-learn hidden from it: ~0.5 s of a one-learner explain.

    LightGBM imports scikit-learn (and with it most of SciPy) only to offer its ``LGBMModel``
    wrappers; lstep calls the ``Booster`` alone (``models.churn``), so a process that explains
    does not need them. With ``sys.modules["sklearn"]`` set to None during the import, LightGBM's
    compat layer finds no scikit-learn (``lightgbm.compat.SKLEARN_INSTALLED`` is False): in this
    process its wrappers refuse to be built, naming scikit-learn, and nothing of lstep builds
    one. scikit-learn itself imports as usual afterwards (the Venn-Abers calibrator of a score
    that is not stored imports it). Does nothing when either library is already imported (a
    test run, a notebook).
    """
    import sys

    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # "import sklearn" now fails
    try:
        import lightgbm  # noqa: F401
    finally:
        del sys.modules["sklearn"]


def assess_options() -> AssessOptions:
    """How ``lstep explain`` assesses its learner: scores and TreeSHAP in one pass, inputs
    coerced, not re-checked.

    The frames are lstep's own, as on the service's online path: the batch's snapshot row (or
    features built and checked from the events), the stored score (``StoredScoreModel`` checks
    it with numpy) and the store's state. The rules engine then coerces them without a pandera
    pass: valid inputs get the same decisions, and the first pass alone (pandera registers its
    backend and imports its hypothesis strategies) cost ~0.1 s of the command.
    """
    from serving.core.assess import AssessOptions

    return AssessOptions(explain=True, check_inputs=False)


def _model_score(store: Any, customer_id: str, day: date) -> Mapping[str, Any] | None:
    """The learner's stored score on ``day`` (None: none, or rules only: no model version)."""
    latest = store.latest_score(customer_id)  # one keyed query: explain is mostly of the last day
    if latest is not None and pd.Timestamp(latest["as_of"]).date() == day:
        score = latest
    else:
        scores = store.scores_frame(day)
        rows = scores[scores["customer_id"] == customer_id].to_dict("records")
        score = rows[0] if rows else None
    version = None if score is None else score.get("model_version")
    return None if version is None or pd.isna(version) else score


def model_cache_dir(current: Settings, version: str) -> Path:
    """Where version ``version`` of the settings' registered model is cached."""
    registry = hashlib.sha256(current.tracking_uri.encode()).hexdigest()[:12]
    return current.home / CACHE_SUBDIR / f"{current.model_name}-v{version}-{registry}"


def version_model(
    current: Settings, version: str, *, warn: Warn | None = None
) -> ChurnModel | None:
    """The ``ChurnModel`` of a registered version: from the cache, else from MLflow (cached then).

    Returns:
        None when the registry does not hold that version (any more).
    """
    from models.churn import ChurnModel

    directory = model_cache_dir(current, version)
    try:
        return ChurnModel.load(directory)
    except (FileNotFoundError, ValueError):
        pass  # not cached yet, or written by another model format: fetch it
    model = _registered_model(current, version)
    if model is not None:
        _write_cache(model, directory, warn)
    return model


@dataclass(frozen=True)
class VersionFacts:
    """What the rules read of a registered version: its operating points and label window."""

    operating_points: dict[str, float]
    horizon_days: int | None


@dataclass(frozen=True)
class VersionPoints:
    """A version as ``serving.infra.rulesets.load_rules`` reads a champion."""

    model: VersionFacts
    version: str


def version_points(
    current: Settings, version: str, *, warn: Warn | None = None
) -> VersionPoints | None:
    """The operating points of a registered version, from its cached ``model.json`` when cached
    (no LightGBM, no MLflow), else through ``version_model`` (which caches the version).

    Returns:
        None when the registry does not hold that version (any more).
    """
    path = model_cache_dir(current, version) / MODEL_METADATA
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        facts = VersionFacts(metadata.get("operating_points", {}), metadata.get("horizon_days"))
    except (OSError, ValueError, AttributeError):  # not cached (or not a model's metadata)
        model = version_model(current, version, warn=warn)
        if model is None:
            return None
        facts = VersionFacts(model.operating_points, model.horizon_days)
    return VersionPoints(facts, version)


def cache_version(
    current: Settings, version: str, model: ChurnModel | None = None, *, warn: Warn | None = None
) -> None:
    """Put a version's files in the cache after a batch scored with it (once per version).

    The first ``lstep explain`` of that batch's days is then fast too. ``model``: the loaded
    ``ChurnModel`` when the caller holds it; otherwise it is fetched through MLflow.
    """
    directory = model_cache_dir(current, version)
    if directory.is_dir():
        return
    if model is None:
        version_model(current, version, warn=warn)
    else:
        _write_cache(model, directory, warn)


def _registered_model(current: Settings, version: str) -> ChurnModel | None:
    """Load ``models:/<name>/<version>`` through MLflow (the slow path: ~1 s of imports)."""
    from mlflow.exceptions import MlflowException

    from models.pyfunc import load_pyfunc, mlflow_uris
    from serving.infra.champion import unwrap_churn_model

    uri = f"models:/{current.model_name}/{version}"
    try:
        with mlflow_uris(current.tracking_uri):
            pyfunc = load_pyfunc(uri)
    except MlflowException:
        return None
    return unwrap_churn_model(pyfunc, uri)


def _write_cache(model: ChurnModel, directory: Path, warn: Warn | None) -> None:
    """Save ``model`` under ``directory`` atomically; a read-only home only costs speed."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            model.save(partial)
            partial.replace(directory)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    except OSError as error:
        if warn is not None and not directory.is_dir():  # a concurrent explain may have won
            warn(f"{directory} not written ({error}): explain loads the model through MLflow")


__all__ = [
    "StoredScoreModel",
    "VersionFacts",
    "VersionModel",
    "VersionPoints",
    "assess_options",
    "cache_version",
    "import_lightgbm_alone",
    "model_cache_dir",
    "stored_day_inputs",
    "version_model",
    "version_points",
]
