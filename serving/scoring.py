"""The scoring core shared by the daily batch job and the HTTP service.

One path from a feature frame to what a learner's record says: the champion's calibrated scores
(``score_features``), the rules engine's decision on features + scores (``decide_learners``), the
reason codes (``explain_learners``), and all three at once (``score_learners``), whose
``to_records`` gives the per-learner objects the API returns.

The champion is the registered model version holding the alias ``champion``
(``models:/lstep-churn@champion``); serving never loads by run id. Without a champion,
``champion=None`` means rules-only: scores are NaN, the rules decide on features alone and every
record says so (``model_version`` null, the decision's description ends with the engine's
"[no model score: decided on rules only]").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pandera.pandas as pa
from mlflow.exceptions import MlflowException

from models.churn import PREDICTION_COLUMNS, ChurnModel
from models.explain import Reason, probability_points, ranked_reasons
from models.pyfunc import ChurnPyfunc, check_flags_present
from rules import RuleSet, decide

DEFAULT_MODEL_NAME = "lstep-churn"
CHAMPION_ALIAS = "champion"
SCORE_COLUMNS: tuple[str, ...] = ("customer_id", "as_of", *PREDICTION_COLUMNS)
_MISSING_ALIAS_CODES = frozenset(
    {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
)
_LOAD_ATTEMPTS = 3


class NoChampionError(RuntimeError):
    """No model version holds the ``champion`` alias and rules-only mode was not asked for."""


def champion_uri(model_name: str = DEFAULT_MODEL_NAME) -> str:
    """The registry URI serving loads: by alias, never by run id."""
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


def no_champion_message(model_name: str = DEFAULT_MODEL_NAME) -> str:
    """The one-line error a user sees when scoring needs a champion and there is none."""
    return (
        f"no champion registered under {champion_uri(model_name)}: run `lstep train` first, "
        "or pass --rules-only"
    )


@dataclass(frozen=True)
class Champion:
    """The loaded champion model.

    Attributes:
        pyfunc: the MLflow pyfunc model, as every consumer (batch, BentoML, Spark) loads it.
        model: the ``ChurnModel`` inside it (for TreeSHAP explanations).
        version: the registered model version the alias pointed at when loaded.
        uri: the alias URI it was loaded from (``models:/lstep-churn@champion``).
    """

    pyfunc: mlflow.pyfunc.PyFuncModel
    model: ChurnModel
    version: str
    uri: str


@contextmanager
def _mlflow_uris(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``tracking_uri`` for a while.

    ``mlflow.pyfunc.load_model("models:/...")`` resolves the alias through the global registry
    URI; restoring the previous ones keeps a host process (the service, tests) unaffected.
    """
    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)


def _champion_version(client: mlflow.MlflowClient, model_name: str) -> str | None:
    """The version the alias points at, or None when the model or the alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as error:
        if error.error_code in _MISSING_ALIAS_CODES:
            return None
        raise


def load_champion(tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME) -> Champion | None:
    """Load the model version holding the ``champion`` alias, or None when there is none.

    The alias is resolved before and after loading: a promotion in between (the alias moved)
    loads again, so ``version`` is always the version whose files were loaded.

    Args:
        tracking_uri: MLflow tracking and registry URI (``Settings.tracking_uri``).
        model_name: the registered model name.

    Raises:
        RuntimeError: when the alias keeps moving while loading.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    uri = champion_uri(model_name)
    for _ in range(_LOAD_ATTEMPTS):
        version = _champion_version(client, model_name)
        if version is None:
            return None
        with _mlflow_uris(tracking_uri):
            pyfunc = mlflow.pyfunc.load_model(uri)
        if _champion_version(client, model_name) == version:
            return Champion(
                pyfunc=pyfunc, model=unwrap_churn_model(pyfunc, uri), version=version, uri=uri
            )
    raise RuntimeError(f"{uri}: the alias moved {_LOAD_ATTEMPTS} times while loading; try again")


def unwrap_churn_model(pyfunc: mlflow.pyfunc.PyFuncModel, uri: str) -> ChurnModel:
    """The ``ChurnModel`` a loaded ``ChurnPyfunc`` holds (for TreeSHAP explanations).

    Raises:
        TypeError: when the pyfunc is not an lstep ``ChurnPyfunc`` (naming ``uri``).
    """
    wrapper = pyfunc.unwrap_python_model()
    model = wrapper.churn_model if isinstance(wrapper, ChurnPyfunc) else None
    if not isinstance(model, ChurnModel):
        raise TypeError(
            f"{uri}: expected an lstep ChurnPyfunc model, got {type(wrapper).__name__}; "
            "register models with `lstep train`"
        )
    return model


# --- scores ---------------------------------------------------------------------------------------

_PROBABILITY = pa.Check.in_range(0.0, 1.0)
SCORES_SCHEMA = pa.DataFrameSchema(
    {
        "customer_id": pa.Column(str, nullable=False, unique=True),
        "as_of": pa.Column("datetime64[us]", nullable=False),
        **{name: pa.Column("float64", _PROBABILITY, nullable=True) for name in PREDICTION_COLUMNS},
    },
    strict=True,
    ordered=True,
    coerce=True,
    name="scores",
)
"""What ``score_features`` returns: one row per learner; NaN scores mean rules-only."""


def _keys(features: pd.DataFrame) -> pd.DataFrame:
    """customer_id and as_of of a feature frame, checked: both present, ids unique."""
    missing = [column for column in ("customer_id", "as_of") if column not in features.columns]
    if missing:
        raise ValueError(f"feature frame: missing key columns {missing}")
    repeated = features["customer_id"][features["customer_id"].duplicated()]
    if len(repeated):
        raise ValueError(
            f"feature frame: {len(repeated)} rows repeat a customer_id "
            f"(e.g. {repeated.head(3).tolist()}); score one row per learner"
        )
    return features[["customer_id", "as_of"]].reset_index(drop=True)


def score_features(features: pd.DataFrame, champion: Champion | None) -> pd.DataFrame:
    """Score a feature frame with the champion (NaN scores when ``champion`` is None).

    The champion's ``ChurnModel`` is called directly: the pyfunc wraps the same model, so the
    scores are identical, without MLflow's per-call input conversion and signature check (its
    input contract, flags true or false, is enforced here with ``check_flags_present``).

    Args:
        features: one row per learner (``features.windows.build_features`` output or the same
            columns); customer_id and as_of are required, extra columns are ignored.
        champion: the loaded champion, or None for rules-only.

    Returns:
        customer_id, as_of, p_churn, p_low, p_high, confidence (``SCORES_SCHEMA``), in the
        order of ``features``.

    Raises:
        ValueError: missing keys or repeated learners.
        models.churn.FeatureFrameError: missing or mistyped model columns, or missing flags.
    """
    keys = _keys(features)
    if champion is None or features.empty:
        return _scores_frame(keys, None)
    predicted = champion.model.predict(features)
    check_flags_present(features, champion.model.feature_dtypes)
    return _scores_frame(keys, predicted)


def _scores_frame(keys: pd.DataFrame, predicted: pd.DataFrame | None) -> pd.DataFrame:
    """Keys plus the prediction columns (NaN without predictions), checked: ``SCORES_SCHEMA``."""
    scores = keys
    for name in PREDICTION_COLUMNS:
        if predicted is None:
            scores[name] = np.nan
        else:
            scores[name] = np.asarray(predicted[name], dtype=np.float64)
    return SCORES_SCHEMA.validate(scores, inplace=True)


# --- decisions ------------------------------------------------------------------------------------


def decide_learners(
    features: pd.DataFrame,
    scores: pd.DataFrame,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    *,
    check_output: bool = True,
) -> pd.DataFrame:
    """Run the rules engine on features plus scores (``rules.decide``).

    Args:
        features: one row per learner at ``as_of``.
        scores: ``score_features`` output for the same learners.
        ruleset: the loaded rules.
        state: the state store's ``state_frame(as_of)`` (an empty frame for a fresh store).
        as_of: the decision day.
        check_output: passed to ``rules.decide`` (False skips the engine's self-check only).

    Returns:
        The engine's decisions (``rules.DECISION_COLUMNS``), P1 first.

    Raises:
        ValueError: when features hold another day, or features and scores name other learners.
    """
    _check_day(features, as_of)
    keys = _keys(features)
    score_columns = scores[["customer_id", *PREDICTION_COLUMNS]]
    # A merge indicator, not Series.isin: isin on a million Arrow-backed strings is very slow.
    scored = features.drop(columns=list(PREDICTION_COLUMNS), errors="ignore").merge(
        score_columns, on="customer_id", how="left", validate="one_to_one", indicator=True
    )
    unscored = int((scored["_merge"] == "left_only").sum())
    if unscored or len(score_columns) != len(keys):
        raise ValueError(
            f"scores: {len(score_columns)} rows for {len(keys)} learners "
            f"({unscored} learners without a score row); score the same frame you decide on"
        )
    return decide(ruleset, state, scored.drop(columns="_merge"), as_of, check_output=check_output)


def _check_day(features: pd.DataFrame, as_of: date) -> None:
    if features.empty:
        return
    other = features["as_of"] != pd.Timestamp(as_of.year, as_of.month, as_of.day)
    if other.any():
        days = sorted({str(pd.Timestamp(day).date()) for day in features.loc[other, "as_of"]})
        raise ValueError(
            f"feature frame: {int(other.sum())} rows are for {days[:5]}, not as_of {as_of}"
        )


# --- explanations ---------------------------------------------------------------------------------


def explain_learners(
    features: pd.DataFrame, champion: Champion | None, *, top: int = 3
) -> dict[str, list[Reason]]:
    """Top reason codes per learner (``models.explain``); empty lists without a champion."""
    ids = [str(customer_id) for customer_id in _keys(features)["customer_id"]]
    if champion is None or features.empty:
        return {customer_id: [] for customer_id in ids}
    return _worded_top_reasons(features, champion.model.contributions(features), top)


@dataclass(frozen=True)
class ScoredLearners:
    """Scores, decisions and reasons of a group of learners on one day.

    Attributes:
        scores: ``score_features`` output (input order).
        decisions: ``decide_learners`` output (P1 first).
        reasons: top reasons per customer_id (empty lists in rules-only mode).
        model_version: the champion's version, None in rules-only mode.
    """

    scores: pd.DataFrame
    decisions: pd.DataFrame
    reasons: dict[str, list[Reason]] = field(default_factory=dict)
    model_version: str | None = None

    @property
    def rules_only(self) -> bool:
        """True when no model scored these learners."""
        return self.model_version is None

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per learner, in the order of ``scores`` (the API's response)."""
        decisions = self.decisions.set_index("customer_id")
        return [
            learner_record(
                score,
                decisions.loc[str(score["customer_id"])],
                self.reasons.get(str(score["customer_id"]), []),
                self.model_version,
            )
            for score in self.scores.to_dict("records")
        ]


def learner_record(
    score: Mapping[str, Any],
    decision: Mapping[str, Any],
    reasons: Sequence[Reason],
    model_version: str | None,
) -> dict[str, Any]:
    """What the API says of one learner, from their score row, decision row and reasons.

    The one place the record is assembled: ``ScoredLearners.to_records`` and the service's
    precomputed day answers (``serving.answers``) both call it, so they cannot drift apart.

    Args:
        score: customer_id, as_of and the prediction columns (``SCORES_SCHEMA`` row).
        decision: the rules engine's decision row (``rules.DECISION_COLUMNS``).
        reasons: the learner's top reasons (empty in rules-only mode).
        model_version: the champion's version, None in rules-only mode.
    """
    return {
        "customer_id": str(score["customer_id"]),
        "as_of": pd.Timestamp(score["as_of"]).date().isoformat(),
        **{name: _number(score[name]) for name in PREDICTION_COLUMNS},
        "current_tag": _text(decision["from_tag"]),
        "proposed_tag": _text(decision["to_tag"]),
        "rule_id": _text(decision["rule_id"]),
        "rule_description": _text(decision["description"]),
        "signal": _text(decision["signal"]),
        "priority": _text(decision["priority"]),
        "action": _text(decision["action"]),
        "control": bool(decision["control"]),
        "reasons": [reason.as_dict() for reason in reasons],
        "model_version": model_version,
    }


def score_learners(
    features: pd.DataFrame,
    *,
    champion: Champion | None,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    top_reasons: int = 3,
) -> ScoredLearners:
    """Score, decide and explain learners in one call (the service's and CLI's entry point).

    Args:
        features: one row per learner at ``as_of`` (``build_features`` output).
        champion: the loaded champion, or None for rules-only.
        ruleset: the loaded rules.
        state: the state store's ``state_frame(as_of)``.
        as_of: the decision day.
        top_reasons: reasons per learner.
    """
    if champion is None or features.empty:
        scores = score_features(features, champion)
        contributions = None
    else:
        scores, contributions = _scores_and_contributions(features, champion)
    # The engine still checks its inputs; its output check is a self-check the tests cover.
    decisions = decide_learners(features, scores, ruleset, state, as_of, check_output=False)
    if contributions is None:
        reasons = explain_learners(features, champion, top=top_reasons)
    else:
        reasons = _worded_top_reasons(features, contributions, top_reasons)
    version = champion.version if champion is not None else None
    return ScoredLearners(
        scores=scores, decisions=decisions, reasons=reasons, model_version=version
    )


def _worded_top_reasons(
    features: pd.DataFrame, contributions: pd.DataFrame, top: int
) -> dict[str, list[Reason]]:
    """Each learner's ``top`` reasons; only those are put into words (not all ~50 features)."""
    points, _, _ = probability_points(contributions)
    names, point_rows = list(points.columns), points.to_numpy()
    return {
        str(row["customer_id"]): ranked_reasons(row, names, point_rows[position], top)
        for position, (_, row) in enumerate(features.iterrows())
    }


def _scores_and_contributions(
    features: pd.DataFrame, champion: Champion
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``score_features`` and the TreeSHAP contributions from one model matrix (one pass)."""
    keys = _keys(features)
    predicted, contributions = champion.model.predict_with_contributions(features)
    check_flags_present(features, champion.model.feature_dtypes)
    return _coerced_scores_frame(keys, predicted), contributions


def _coerced_scores_frame(keys: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """``_scores_frame`` for checked predictions: ``SCORES_SCHEMA``'s coercion, not its checks.

    ``predict_with_contributions`` checked the probabilities and ``_keys`` the ids' uniqueness;
    the full schema run costs ~10 ms per one-learner request. Each column is coerced by the
    schema's own dtype, so the frame is the one ``_scores_frame`` returns.

    Raises:
        ValueError: when a customer_id or as_of is missing (naming how many rows).
    """
    missing = int(keys["customer_id"].isna().sum() + keys["as_of"].isna().sum())
    if missing:
        raise ValueError(f"feature frame: {missing} missing customer_id or as_of values")
    scores = keys
    for name in PREDICTION_COLUMNS:
        scores[name] = np.asarray(predicted[name], dtype=np.float64)
    for name, column in SCORES_SCHEMA.columns.items():
        scores[name] = column.dtype.coerce(scores[name])
    return scores


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _text(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value)


__all__ = [
    "CHAMPION_ALIAS",
    "DEFAULT_MODEL_NAME",
    "SCORES_SCHEMA",
    "Champion",
    "NoChampionError",
    "ScoredLearners",
    "champion_uri",
    "decide_learners",
    "explain_learners",
    "learner_record",
    "load_champion",
    "no_champion_message",
    "score_features",
    "score_learners",
    "unwrap_churn_model",
]
