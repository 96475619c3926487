"""The churn model: LightGBM, Venn-Abers calibration and a decision confidence.

What a prediction means
-----------------------
``ChurnModel.predict`` returns four numbers per learner (all in [0, 1]):

- ``p_low``, ``p_high``: the inductive Venn-Abers interval ``[p0, p1]`` (Vovk, Petej & Fedorova
  2015, computed with the ``venn-abers`` library). Two isotonic regressions of the outcome on
  LightGBM's raw score are fitted on the calibration slice, one with the new row added as a
  non-churner (``p0``) and one with it added as a churner (``p1``). Venn-Abers validity: one of the
  two is a perfectly calibrated probability (in expectation over calibration slices), so the
  interval brackets the calibrated churn probability. It is wide where the calibration slice has
  few learners with similar scores and narrow where it has many.
- ``p_churn``: the standard merge of the interval into one calibrated probability,
  ``p1 / (1 - p0 + p1)`` (it always lies inside ``[p_low, p_high]``).
- ``confidence``: a pessimistic probability that the churn DECISION is right. The decision is
  "churner" when ``p_churn >= 0.5`` (``DECISION_THRESHOLD``), else "stays". For a churner decision
  the probability that it is right is the churn probability, at least ``p_low``; for a stays
  decision it is one minus the churn probability, at least ``1 - p_high``. So::

      confidence = p_low        if p_churn >= 0.5
                   1 - p_high   otherwise

  Claim (tested on a seeded synthetic population): among decisions with confidence around ``c``,
  the share that is right is ``c`` or more, up to sampling error (Venn-Abers validity holds in
  expectation; a finite calibration slice can miss by its own sampling error, and the test slice
  measures with binomial error); higher confidence means more reliable decisions. Confidence is
  low both when the probability is near 0.5 (a coin toss) and when the interval is wide (little
  calibration evidence), and falls below 0.5 when the interval straddles 0.5 widely. It is not the
  interval width: ``p_high - p_low`` alone says how much calibration evidence there is, not
  whether the decision is right.

Calibration happens on a LATER time slice than training (DESIGN §6); the caller passes both slices.

Model choices
-------------
- All catalog features are used (``model_feature_names``): each uses only events before ``as_of``,
  so none leaks the label; ``risk_indicator_count`` duplicates the flags but costs nothing to trees.
- Monotone constraints (``MONOTONE_DIRECTIONS``) make churn risk non-decreasing in the days of
  inactivity and non-increasing in the activity trends, holding every other feature fixed: this is
  what a CS lead expects, it keeps reason codes coherent, and it regularises noisy recency splits.
  A caller that sets ``monotone_constraints`` in ``params`` replaces them.
- Saved files are portable: ``booster.txt`` (LightGBM text model), ``calibrator.npz`` (the
  Venn-Abers arrays, no pickle) and ``model.json`` (feature list and types, parameters, summary).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pandera.pandas as pa
from numpy.typing import ArrayLike

from features.catalog import FeatureDtype
from features.machine import usable_cores
from models.calibration import VennAbersCalibration
from models.compiled import probabilities
from models.matrix import (
    SMALL_BATCH_ROWS,
    booster_values,
    chunk_values,
    column_arrays,
    lightgbm_values,
    model_feature_dtypes,
    model_feature_names,
    to_model_matrix,
)

FORMAT_VERSION = 1
DECISION_THRESHOLD = 0.5
PREDICTION_COLUMNS: tuple[str, ...] = ("p_churn", "p_low", "p_high", "confidence")
MONOTONE_DIRECTIONS: dict[str, int] = {
    "days_since_last_event": 1,
    "days_since_last_session": 1,
    "activity_trend_7v23": -1,
    "events_change_7v23": -1,
}
"""+1: churn risk may only rise with the feature; -1: may only fall (all else fixed)."""

BOOSTER_FILE = "booster.txt"
CALIBRATOR_FILE = "calibrator.npz"
METADATA_FILE = "model.json"

_ROUND_ALIASES = frozenset(
    {"num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round"}
    | {"num_rounds", "nrounds", "num_boost_round", "n_estimators", "max_iter"}
)


# --- calibration ----------------------------------------------------------------------------------


def _threads(rows: int) -> dict[str, int]:
    """LightGBM's options for ``rows`` rows: one thread for a small batch, else one per core."""
    return {"num_threads": 1 if rows <= SMALL_BATCH_ROWS else usable_cores()}


def decision_confidence(p_churn: ArrayLike, p_low: ArrayLike, p_high: ArrayLike) -> np.ndarray:
    """Pessimistic probability that the decision ``p_churn >= 0.5`` is right (module doc).

    ``p_low`` where the decision is "churner", ``1 - p_high`` where it is "stays".
    """
    churner = np.asarray(p_churn, dtype=np.float64) >= DECISION_THRESHOLD
    return np.where(churner, np.asarray(p_low, np.float64), 1.0 - np.asarray(p_high, np.float64))


@cache
def _prediction_schema() -> pa.DataFrameSchema:
    """The prediction contract: four probabilities in [0, 1], p_churn inside its interval."""
    probability = pa.Check.in_range(0.0, 1.0)
    columns = {name: pa.Column("float64", probability) for name in PREDICTION_COLUMNS}
    inside = pa.Check(
        lambda frame: (
            (frame["p_low"] <= frame["p_churn"] + 1e-12)
            & (frame["p_churn"] <= frame["p_high"] + 1e-12)
        ),
        error="p_churn must lie inside [p_low, p_high]",
    )
    return pa.DataFrameSchema(columns, checks=[inside], strict=True, ordered=True, coerce=True)


def _checked_predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """``_prediction_schema``'s contract in numpy: probabilities in [0, 1], p_churn inside.

    Raises:
        ValueError: naming the broken check and how many rows break it.
    """
    arrays = column_arrays(frame)
    values = np.column_stack([np.asarray(arrays[name], np.float64) for name in PREDICTION_COLUMNS])
    outside = int((~((values >= 0.0) & (values <= 1.0))).any(axis=1).sum())  # NaN is outside
    p_churn, p_low, p_high = values[:, 0], values[:, 1], values[:, 2]  # PREDICTION_COLUMNS' order
    not_inside = int((~((p_low <= p_churn + 1e-12) & (p_churn <= p_high + 1e-12))).sum())
    if outside or not_inside:
        raise ValueError(
            f"predictions: {outside} of {len(frame)} rows have a probability outside [0, 1] or "
            f"missing, {not_inside} have p_churn outside [p_low, p_high]"
        )
    return frame


# --- training inputs ------------------------------------------------------------------------------


def _outcomes(y: ArrayLike, frame: pd.DataFrame, label: str) -> np.ndarray:
    """0/1 outcomes aligned with ``frame``; both classes must be present.

    Raises:
        ValueError: on a misaligned index, a length mismatch, values other than 0/1, or one class.
    """
    if isinstance(y, pd.Series) and not y.index.equals(frame.index):
        raise ValueError(f"{label}: its index does not match the feature frame's index")
    if isinstance(y, pd.Series):
        values = y.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.asarray(y, dtype=np.float64).ravel()
    if values.size != len(frame):
        raise ValueError(f"{label}: {values.size} outcomes for {len(frame)} feature rows")
    not_binary = int(np.sum((values != 0) & (values != 1)))
    if not_binary:
        raise ValueError(f"{label}: {not_binary} values are not 0/1 (or are missing)")
    churners = int(values.sum())
    if churners in (0, values.size):
        raise ValueError(
            f"{label}: needs both classes, got {churners} churners in {values.size} rows"
        )
    return values


def lightgbm_params(
    params: Mapping[str, Any], *, seed: int = 0, feature_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The LightGBM parameters ``ChurnModel.fit`` trains with: ``params`` over the defaults.

    Defaults: binary objective, silent, seeded, deterministic, row-wise histograms, and the
    monotone constraints of ``MONOTONE_DIRECTIONS`` in the order of ``feature_names`` (the model
    features by default). Tuning code should build its parameters here too, so that the trials
    and the final model train the same way.

    Raises:
        ValueError: when ``params`` sets another objective, another seed, or a number of rounds.
    """
    objective = params.get("objective", "binary")
    if objective != "binary":
        raise ValueError(f"params: objective must be 'binary', got {objective!r}")
    if "seed" in params and params["seed"] != seed:
        raise ValueError(
            f"params: seed={params['seed']!r} conflicts with seed={seed}; give it once"
        )
    rounds = sorted(_ROUND_ALIASES & set(params))
    if rounds:
        raise ValueError(f"params: {rounds} set the number of rounds; pass num_boost_round instead")
    merged: dict[str, Any] = {
        "objective": "binary",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
    }
    names = model_feature_names() if feature_names is None else feature_names
    directions = [MONOTONE_DIRECTIONS.get(name, 0) for name in names]
    if any(directions):
        merged["monotone_constraints"] = directions
    merged.update(params)
    return json.loads(json.dumps(merged, default=_json_scalar))


def _json_scalar(value: Any) -> Any:
    """numpy scalars (e.g. from Optuna) as plain Python numbers, so params round-trip as JSON."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"params: {value!r} ({type(value).__name__}) is not JSON-serialisable")


# --- the model ------------------------------------------------------------------------------------


@dataclass
class ChurnModel:
    """A LightGBM booster, its Venn-Abers calibration and the columns it was trained on.

    Attributes:
        booster: the trained LightGBM booster (raw churn probability).
        calibrator: Venn-Abers calibration fitted on the later calibration slice.
        feature_names: model columns, in the booster's order.
        params: the LightGBM parameters used (after defaults).
        num_boost_round: boosting rounds.
        seed: the training seed.
        feature_dtypes: catalog dtype of each model column, so a saved model types its input
            without the catalog of the day.
        training_summary: row counts and churn rates of the training and calibration slices.
        operating_points: named thresholds on ``p_churn`` chosen on the calibration slice by
            training (``training.early_warning``: ``early_warning``, ``recovered``); the rules
            refer to them by name (``value: "@early_warning"``). Empty for a model saved before
            they existed; they travel in ``model.json`` wherever the model goes.
        horizon_days: the label window ``p_churn`` is a probability of churn within (``lstep
            train --horizon-days``); the lifetime projection reads it (``rules.lifetime``). None
            for a model saved before it was recorded.
    """

    booster: lgb.Booster
    calibrator: VennAbersCalibration
    feature_names: list[str]
    params: dict[str, Any]
    num_boost_round: int
    seed: int = 0
    feature_dtypes: dict[str, FeatureDtype] = field(default_factory=dict)
    training_summary: dict[str, float] = field(default_factory=dict)
    operating_points: dict[str, float] = field(default_factory=dict)
    horizon_days: int | None = None

    def __post_init__(self) -> None:
        if not self.feature_dtypes:
            catalog_dtypes = model_feature_dtypes()
            self.feature_dtypes = {name: catalog_dtypes[name] for name in self.feature_names}
        if list(self.feature_dtypes) != list(self.feature_names):
            raise ValueError("ChurnModel: feature_dtypes must list feature_names in the same order")
        if self.booster.feature_name() != list(self.feature_names):
            raise ValueError(
                f"ChurnModel: the booster's features {self.booster.feature_name()} differ "
                f"from feature_names {self.feature_names}"
            )

    @classmethod
    def fit(
        cls,
        X_train: pd.DataFrame,
        y_train: ArrayLike,
        X_cal: pd.DataFrame,
        y_cal: ArrayLike,
        *,
        params: Mapping[str, Any],
        num_boost_round: int,
        seed: int = 0,
    ) -> ChurnModel:
        """Train LightGBM on the training slice and calibrate it on the later calibration slice.

        Args:
            X_train: training feature frame (extra columns ignored).
            y_train: its 0/1 outcomes (a Series must share the frame's index).
            X_cal: calibration feature frame, from a later time slice than ``X_train``.
            y_cal: its 0/1 outcomes.
            params: LightGBM parameters (e.g. from Optuna); binary objective only.
            num_boost_round: number of boosting rounds, >= 1.
            seed: seeds LightGBM; training is deterministic for a given seed and data.

        Raises:
            FeatureFrameError: when a frame lacks a model column or has a mistyped one.
            ValueError: on bad outcomes, conflicting params or ``num_boost_round < 1``.
        """
        if num_boost_round < 1:
            raise ValueError(f"num_boost_round must be >= 1, got {num_boost_round}")
        feature_dtypes = model_feature_dtypes()
        train_matrix = to_model_matrix(X_train, feature_dtypes=feature_dtypes)
        cal_matrix = to_model_matrix(X_cal, feature_dtypes=feature_dtypes)
        train_outcomes = _outcomes(y_train, X_train, "y_train")
        cal_outcomes = _outcomes(y_cal, X_cal, "y_cal")
        booster_params = lightgbm_params(params, seed=seed, feature_names=list(feature_dtypes))
        dataset = lgb.Dataset(train_matrix, label=train_outcomes)
        booster = lgb.train(booster_params, dataset, num_boost_round=num_boost_round)
        raw_cal = booster.predict(lightgbm_values(cal_matrix))
        calibrator = VennAbersCalibration.fit(raw_cal, cal_outcomes)
        summary = {
            "n_train": len(train_matrix),
            "n_cal": len(cal_matrix),
            "churn_rate_train": float(train_outcomes.mean()),
            "churn_rate_cal": float(cal_outcomes.mean()),
            "n_calibration_scores": len(calibrator.scores),
        }
        return cls(
            booster=booster,
            calibrator=calibrator,
            feature_names=list(feature_dtypes),
            params=booster_params,
            num_boost_round=num_boost_round,
            seed=seed,
            feature_dtypes=feature_dtypes,
            training_summary=summary,
        )

    def model_matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        """``to_model_matrix`` with this model's columns and types."""
        return to_model_matrix(X, feature_dtypes=self.feature_dtypes)

    def raw_probability(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated LightGBM churn probability per row of ``X`` (in chunks when large).

        Raises:
            FeatureFrameError: naming every missing or mistyped model column of ``X``.
        """
        raw = np.empty(len(X), dtype=np.float64)
        for rows, values in chunk_values(X, self.feature_dtypes):
            raw[rows] = probabilities(self.booster, values, _threads(len(values)))
        return raw

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Calibrated churn probability, its Venn-Abers interval and the decision confidence.

        Returns:
            ``p_churn``, ``p_low``, ``p_high``, ``confidence`` (float64), indexed like ``X``.

        Raises:
            FeatureFrameError: naming every missing or mistyped model column of ``X``.
        """
        frame = self._calibrated(self.raw_probability(X), X.index)
        return _prediction_schema().validate(frame, inplace=True)

    def predict_with_contributions(self, X: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``predict`` and ``contributions`` of ``X`` from ONE model matrix (the serving path).

        The results equal those of the two methods. Cheaper for small frames: the matrix is
        built and typed once, without the pandera re-check of what its construction guarantees,
        and the predictions are checked with numpy instead of pandera (same contract).

        Returns:
            (predictions as ``predict`` returns them, contributions as ``contributions`` does).

        Raises:
            FeatureFrameError: naming every missing or mistyped model column of ``X``.
            ValueError: when a prediction breaks its contract (a bug, never the input's fault).
        """
        values = booster_values(X, self.feature_dtypes)
        columns = [*self.feature_names, "bias"]
        if values.size == 0:
            contributions = pd.DataFrame(columns=columns, index=X.index, dtype=np.float64)
            return self._calibrated(np.empty(0, dtype=np.float64), X.index), contributions
        predictions = self.predict_rows(X, values)
        contributions = pd.DataFrame(self.raw_contributions(values), columns=columns, index=X.index)
        return predictions, contributions

    def predict_rows(self, X: pd.DataFrame, values: np.ndarray) -> pd.DataFrame:
        """``predict`` of ``X`` (non-empty) whose ``model_values`` the caller built: ``values``.

        A caller holding the matrix predicts from it and computes ``raw_contributions`` of the
        same rows when it likes (the service runs TreeSHAP beside the rules engine).

        Raises:
            ValueError: when a prediction breaks its contract (a bug, never the input's fault).
        """
        raw = probabilities(self.booster, values, _threads(len(values)))
        return _checked_predictions(self._calibrated(raw, X.index))

    def model_values(self, X: pd.DataFrame) -> np.ndarray:
        """``X`` as the float64 array the booster reads (categories as their training codes).

        Each column is checked as ``predict_with_contributions`` checks it. Rows of the result
        feed ``raw_contributions`` later without building a frame again (the service keeps
        them for the day's learners and explains one row per request).

        Raises:
            FeatureFrameError: naming every missing or mistyped model column of ``X``.
        """
        return booster_values(X, self.feature_dtypes)

    def raw_contributions(self, values: np.ndarray, *, num_threads: int = 0) -> np.ndarray:
        """TreeSHAP contributions of rows of ``model_values``: the features, then ``bias``.

        Args:
            values: rows of ``model_values``.
            num_threads: LightGBM threads (0: ``_threads``, by the rows); a background job passes 1
                to leave the other cores to requests.
        """
        options = {"num_threads": num_threads} if num_threads else _threads(len(values))
        contributions = self.booster.predict(values, pred_contrib=True, **options)
        return np.asarray(contributions, dtype=np.float64)

    def _calibrated(self, raw: np.ndarray, index: pd.Index) -> pd.DataFrame:
        """The four prediction columns of raw probabilities, unchecked."""
        p_churn, p_low, p_high = self.calibrator.calibrate(raw)
        confidence = decision_confidence(p_churn, p_low, p_high)
        columns = (p_churn, p_low, p_high, confidence)
        return pd.DataFrame(dict(zip(PREDICTION_COLUMNS, columns, strict=True)), index=index)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """TreeSHAP contributions to the raw log-odds: one column per feature, then ``bias``.

        Each row sums to the booster's raw log-odds for that row (before calibration). The
        columns of ``X`` are checked as ``predict_with_contributions`` checks them, without the
        pandera re-check of the matrix (its first run imports pandera's strategies, ~0.1 s of a
        one-learner ``lstep explain``).

        Raises:
            FeatureFrameError: naming every missing or mistyped model column of ``X``.
        """
        values = booster_values(X, self.feature_dtypes)
        columns = [*self.feature_names, "bias"]
        if values.size == 0:
            return pd.DataFrame(columns=columns, index=X.index, dtype=np.float64)
        return pd.DataFrame(self.raw_contributions(values), columns=columns, index=X.index)

    def save(self, directory: Path) -> None:
        """Write ``booster.txt``, ``calibrator.npz`` and ``model.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / BOOSTER_FILE))
        self.calibrator.save(directory / CALIBRATOR_FILE)
        metadata = {
            "format_version": FORMAT_VERSION,
            "feature_names": self.feature_names,
            "feature_dtypes": self.feature_dtypes,
            "params": self.params,
            "num_boost_round": self.num_boost_round,
            "seed": self.seed,
            "training_summary": self.training_summary,
            "operating_points": self.operating_points,
            "horizon_days": self.horizon_days,
            "lightgbm_version": lgb.__version__,
        }
        text = json.dumps(metadata, indent=2, default=_json_scalar)
        (directory / METADATA_FILE).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> ChurnModel:
        """Read a model written by ``save``.

        Raises:
            FileNotFoundError: naming the missing files.
            ValueError: when the files were written by an unknown format version.
        """
        directory = Path(directory)
        expected = (BOOSTER_FILE, CALIBRATOR_FILE, METADATA_FILE)
        missing = [name for name in expected if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory}: not a saved churn model, missing {missing}")
        metadata = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory / METADATA_FILE}: format_version {metadata.get('format_version')!r}, "
                f"this code reads {FORMAT_VERSION}"
            )
        return cls(
            booster=lgb.Booster(model_file=str(directory / BOOSTER_FILE)),
            calibrator=VennAbersCalibration.load(directory / CALIBRATOR_FILE),
            feature_names=metadata["feature_names"],
            params=metadata["params"],
            num_boost_round=metadata["num_boost_round"],
            seed=metadata["seed"],
            feature_dtypes=metadata["feature_dtypes"],
            training_summary=metadata["training_summary"],
            # absent in a model saved before operating points existed: it has none
            operating_points=metadata.get("operating_points", {}),
            horizon_days=metadata.get("horizon_days"),  # absent before it was recorded
        )


__all__ = [
    "DECISION_THRESHOLD",
    "MONOTONE_DIRECTIONS",
    "PREDICTION_COLUMNS",
    "ChurnModel",
    "decision_confidence",
    "lightgbm_params",
]
