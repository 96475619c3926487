"""Scoring a feature frame with the champion: the first step of ``assess`` (pure).

``score_features`` calls the champion's ``ChurnModel`` directly (the MLflow pyfunc wraps the
same model: identical scores, without MLflow's per-call conversion); ``scores_and_contributions``
also returns the TreeSHAP contributions of the same model matrix, for the paths that explain.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Protocol

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features.keys import repeated_ids
from features.schemas import KEY_COLUMNS
from models.churn import PREDICTION_COLUMNS, ChurnModel
from models.pyfunc import check_flags_present
from rules.schemas import unique_ids

_PROBABILITY = pa.Check.in_range(0.0, 1.0)
SCORES_SCHEMA = pa.DataFrameSchema(
    {
        "customer_id": pa.Column(str, unique_ids(), nullable=False),
        "as_of": pa.Column("datetime64[us]", nullable=False),
        **{name: pa.Column("float64", _PROBABILITY, nullable=True) for name in PREDICTION_COLUMNS},
    },
    strict=True,
    ordered=True,
    coerce=True,
    name="scores",
)
"""What ``score_features`` returns: one row per learner; NaN scores mean rules-only."""


EXPLAIN_DEADLINE_S = 60.0
"""How long ``assess`` waits for TreeSHAP run beside it (one learner: ~2.4 ms; a few hundred
rows: tens of ms); past it the request fails naming the wait, not hangs."""


class ModelHandle(Protocol):
    """What ``assess`` needs of a loaded champion: the model and its registered version."""

    @property
    def model(self) -> ChurnModel: ...

    @property
    def version(self) -> str: ...


# --- scores ---------------------------------------------------------------------------------------


def score_features(features: pd.DataFrame, champion: ModelHandle | None) -> pd.DataFrame:
    """Score a feature frame with the champion (NaN scores when ``champion`` is None).

    The champion's ``ChurnModel`` is called directly: the MLflow pyfunc wraps the same model, so
    the scores are identical, without MLflow's per-call input conversion and signature check
    (its input contract, flags true or false, is enforced here with ``check_flags_present``).

    Args:
        features: one row per learner; customer_id and as_of are required, extra columns are
            ignored.
        champion: the loaded champion, or None for rules-only.

    Returns:
        customer_id, as_of and the prediction columns (``SCORES_SCHEMA``), in input order.

    Raises:
        ValueError: missing keys or repeated learners.
        models.matrix.FeatureFrameError: missing or mistyped model columns, or missing flags.
    """
    keys = keys_of(features)
    if champion is None or features.empty:
        return _scores_frame(keys, None)
    predicted = champion.model.predict(features)
    check_flags_present(features, champion.model.feature_dtypes)
    return _scores_frame(keys, predicted)


def keys_of(features: pd.DataFrame) -> pd.DataFrame:
    """customer_id and as_of of a feature frame, checked: both present, ids unique."""
    check_keys(features)
    # One constructor from the two arrays: ``features[[...]]`` takes from every feature block.
    return pd.DataFrame({name: features[name].array for name in KEY_COLUMNS})


def check_keys(features: pd.DataFrame) -> None:
    """Refuse a feature frame without customer_id or as_of, or that repeats a customer_id.

    Raises:
        ValueError: naming the missing columns, or the repeated ids.
    """
    missing = [column for column in KEY_COLUMNS if column not in features.columns]
    if missing:
        raise ValueError(f"feature frame: missing key columns {missing}")
    if len(features) < 2:  # one learner cannot repeat
        return
    repeated = features["customer_id"][repeated_ids(features["customer_id"])]
    if len(repeated):
        raise ValueError(
            f"feature frame: {len(repeated)} rows repeat a customer_id "
            f"(e.g. {repeated.head(3).tolist()}); score one row per learner"
        )


def _scores_frame(keys: pd.DataFrame, predicted: pd.DataFrame | None) -> pd.DataFrame:
    """Keys plus the prediction columns (NaN without predictions), checked: ``SCORES_SCHEMA``."""
    scores = keys
    for name in PREDICTION_COLUMNS:
        values = np.nan if predicted is None else np.asarray(predicted[name], dtype=np.float64)
        scores[name] = values
    return SCORES_SCHEMA.validate(scores, inplace=True)


def scores_and_contributions(
    features: pd.DataFrame, champion: ModelHandle, *, beside: Executor | None = None
) -> tuple[pd.DataFrame, Callable[[], np.ndarray]]:
    """``score_features`` and the TreeSHAP contributions of the same model matrix (built once).

    ``predict_rows`` checked the probabilities and ``check_keys`` the ids' uniqueness; the
    full schema run costs ~10 ms per one-learner request, so the keys are only coerced by the
    schema's own dtypes (the scores are float64 already): the frame equals the one
    ``score_features`` returns. It is built in one constructor (setting columns one by one on a
    one-learner frame cost more than the TreeSHAP call).

    Args:
        features: one row per learner, as ``score_features`` takes.
        champion: the loaded champion.
        beside: where TreeSHAP runs while the caller goes on (the rules engine decides
            meanwhile: LightGBM releases the GIL, so on a second core a one-learner request
            no longer waits ~2.4 ms for it); None: computed here, before returning.

    Returns:
        The scores, and a call giving the contributions (``ChurnModel.raw_contributions`` rows:
        the features, then ``bias``), waiting at most ``EXPLAIN_DEADLINE_S`` for them.
    """
    check_keys(features)
    model = champion.model
    values = model.model_values(features)
    check_flags_present(features, model.feature_dtypes)
    scores = _keyed_scores(features, model, values)
    if beside is None or not len(values):
        contributions = model.raw_contributions(values) if len(values) else _no_rows(model)
        return scores, lambda: contributions
    pending = beside.submit(model.raw_contributions, values)
    return scores, lambda: pending.result(timeout=EXPLAIN_DEADLINE_S)


def _keyed_scores(features: pd.DataFrame, model: ChurnModel, values: np.ndarray) -> pd.DataFrame:
    """The scores frame of ``values`` (rows of ``features``' model matrix) with their keys."""
    ids, days = features["customer_id"].array, features["as_of"].array
    missing = int(pd.isna(ids).sum() + pd.isna(days).sum())
    if missing:
        raise ValueError(f"feature frame: {missing} missing customer_id or as_of values")
    # astype to the schema's own dtypes: what its coerce gives, without a Series and pandera's
    # dispatch per column (~0.1 ms a request).
    arrays = {
        name: column.astype(SCORES_SCHEMA.columns[name].dtype.type)
        for name, column in (("customer_id", ids), ("as_of", days))
    }
    predicted = model.predict_rows(features, values) if len(values) else None
    for name in PREDICTION_COLUMNS:
        column = np.empty(0) if predicted is None else predicted[name]
        arrays[name] = np.asarray(column, dtype=np.float64)
    return pd.DataFrame(arrays)


def _no_rows(model: ChurnModel) -> np.ndarray:
    """The contributions of no learner: no row of the features and ``bias``."""
    return np.empty((0, len(model.feature_names) + 1), dtype=np.float64)


__all__ = [
    "EXPLAIN_DEADLINE_S",
    "SCORES_SCHEMA",
    "ModelHandle",
    "check_keys",
    "keys_of",
    "score_features",
    "scores_and_contributions",
]
