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
import types
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

from features.catalog import FeatureDtype, load_catalog
from features.vocabulary import PRODUCT_TAGS

FORMAT_VERSION = 1
DECISION_THRESHOLD = 0.5
PRODUCT_TAG_CATEGORIES: tuple[str, ...] = tuple(PRODUCT_TAGS)
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


class FeatureFrameError(ValueError):
    """A feature frame lacks model columns or has columns of the wrong type."""


# --- the model's columns --------------------------------------------------------------------------


def model_feature_names() -> list[str]:
    """The catalog features the model uses, in catalog order (all of them; see the module doc)."""
    return load_catalog().names


def model_feature_dtypes() -> dict[str, FeatureDtype]:
    """Catalog dtype (float, int, bool, category) of each model feature, in catalog order."""
    return {spec.name: spec.dtype for spec in load_catalog().features}


def _numeric_column(series: pd.Series, expected: str) -> tuple[np.ndarray | None, str | None]:
    """float64 values of a numeric column, or a problem description."""
    name = series.name
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return None, f"column {name} has dtype {series.dtype}, expected {expected}"
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if series.dtype.kind != "f":  # integers are finite and whole: skip the scans below
        return values, None
    infinite = int(np.isinf(values).sum())
    if infinite:
        return None, f"column {name} has {infinite} infinite values"
    if expected == "int":
        fractional = values[values != np.floor(values)]  # NaN != NaN: keep only real numbers
        fractional = fractional[~np.isnan(fractional)]
        if fractional.size:
            return None, (
                f"column {name} has {fractional.size} non-integer values "
                f"(e.g. {fractional[0]}), expected int"
            )
    return values, None


def _flag_column(series: pd.Series) -> tuple[np.ndarray | None, str | None]:
    """float64 0/1 values (NaN for missing) of a flag column, or a problem description."""
    name = series.name
    if pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), None
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        not_binary = int((~np.isnan(values) & (values != 0) & (values != 1)).sum())
        if not_binary:
            return None, f"column {name} has {not_binary} values other than 0/1, expected bool"
        return values, None
    if pd.api.types.is_object_dtype(series):
        # JSON payloads with nulls arrive as object columns of True/False/None.
        present = series.dropna()
        if all(isinstance(value, bool | np.bool_) for value in present):
            return series.map({True: 1.0, False: 0.0}).to_numpy(dtype=np.float64), None
    return None, f"column {name} has dtype {series.dtype}, expected bool"


def _category_column(series: pd.Series) -> tuple[pd.Categorical | None, str | None]:
    """``product_tag`` as a Categorical with the fixed categories, or a problem description."""
    name = series.name
    if not _may_hold_tiers(series.dtype):
        return None, f"column {name} has dtype {series.dtype}, expected category"
    categorical = pd.Categorical(series, dtype=_product_tag_dtype())
    # pd.Categorical turns values outside the categories into NaN: find them, never drop them.
    unknown_rows = np.asarray(categorical.isna()) & series.notna().to_numpy()
    if unknown_rows.any():
        unknown = sorted({str(value) for value in series[unknown_rows].unique()})
        return None, (
            f"column {name} has values outside {list(PRODUCT_TAG_CATEGORIES)}: "
            f"{unknown[:10]} ({int(unknown_rows.sum())} rows)"
        )
    return categorical, None


@cache
def _product_tag_dtype() -> pd.CategoricalDtype:
    """The tier dtype, built once: building one checks its categories (an Index) per call."""
    return pd.CategoricalDtype(list(PRODUCT_TAG_CATEGORIES))


def _model_column(series: pd.Series, dtype: FeatureDtype) -> tuple[Any, str | None]:
    if dtype == "category":
        return _category_column(series)
    if dtype == "bool":
        return _flag_column(series)
    return _numeric_column(series, dtype)


@cache
def _matrix_schema(feature_dtypes: tuple[tuple[str, str], ...]) -> pa.DataFrameSchema:
    """The model matrix contract: exactly the model columns, in order, float64 or the category."""
    category = pd.CategoricalDtype(list(PRODUCT_TAG_CATEGORIES))
    columns = {
        name: pa.Column(category if dtype == "category" else "float64", nullable=True)
        for name, dtype in feature_dtypes
    }
    return pa.DataFrameSchema(columns, strict=True, ordered=True, coerce=True)


def to_model_matrix(
    frame: pd.DataFrame, *, feature_dtypes: Mapping[str, FeatureDtype] | None = None
) -> pd.DataFrame:
    """Select and type the model columns of a feature frame.

    Numbers and flags become float64 (missing values NaN); ``product_tag`` becomes a Categorical
    with the fixed categories PT_001..PT_003. Other columns (customer_id, as_of, churned, ...) are
    ignored. The index is kept.

    Args:
        frame: a feature frame (``features.windows`` output or any frame with the model columns).
        feature_dtypes: model columns and their catalog dtypes; the catalog's by default (a saved
            model passes its own, so that it keeps working when the catalog grows).

    Raises:
        FeatureFrameError: naming every missing column and every mistyped column.
    """
    dtypes = dict(feature_dtypes) if feature_dtypes is not None else model_feature_dtypes()
    matrix = _typed_matrix(frame, dtypes)
    # inplace: the matrix is new, so validation need not copy a million rows again
    return _matrix_schema(tuple(dtypes.items())).validate(matrix, inplace=True)


def _typed_matrix(frame: pd.DataFrame, dtypes: Mapping[str, FeatureDtype]) -> pd.DataFrame:
    """``to_model_matrix`` without the pandera re-check of the matrix it builds.

    Every input column is checked here (``_model_column``); the re-check only confirms what the
    construction guarantees (float64 or the fixed Categorical, in order), and costs ~15 ms per
    call on one row, which matters to the service's one-learner requests.

    Raises:
        FeatureFrameError: naming every missing column and every mistyped column.
    """
    if not isinstance(frame, pd.DataFrame):
        raise FeatureFrameError(f"feature frame: expected a pandas DataFrame, got {type(frame)}")
    missing = [name for name in dtypes if name not in frame.columns]
    problems: list[str] = []
    columns: dict[str, Any] = {}
    for name in (name for name in dtypes if name in frame.columns):
        columns[name], problem = _model_column(frame[name], dtypes[name])
        if problem:
            problems.append(problem)
    if missing or problems:
        parts = [f"missing columns {missing}"] if missing else []
        raise FeatureFrameError("feature frame: " + "; ".join(parts + problems))
    return pd.DataFrame(columns, index=frame.index)


def _booster_values(frame: pd.DataFrame, dtypes: Mapping[str, FeatureDtype]) -> np.ndarray:
    """``_lightgbm_values(_typed_matrix(frame, dtypes))``: the booster's array, checked.

    A small frame (a request's learners) whose columns need no checks beyond their dtypes
    (integers, flags as booleans, finite floats) is converted in one block: per-column access
    to fifty columns was half of scoring one learner. Anything else, and every large frame,
    takes the per-column path, which also words the errors.

    Raises:
        FeatureFrameError: naming every missing column and every mistyped column.
    """
    if isinstance(frame, pd.DataFrame) and len(frame) <= SMALL_BATCH_ROWS:
        values = _block_values(frame, dtypes)
        if values is not None:
            return values
    return _lightgbm_values(_typed_matrix(frame, dtypes))


def _block_values(frame: pd.DataFrame, dtypes: Mapping[str, FeatureDtype]) -> np.ndarray | None:
    """The booster's array of ``frame`` in one conversion, or None where a column needs the
    per-column path (missing, another dtype, an infinite or fractional value, a tier)."""
    present = dict(zip(frame.columns.tolist(), frame.dtypes.tolist(), strict=True))
    if len(present) != len(frame.columns) or any(name not in present for name in dtypes):
        return None
    names = list(dtypes)
    numeric = [name for name in names if dtypes[name] != "category"]
    kinds = [_dtype_kind(present[name]) for name in numeric]
    allowed = {"bool": ("b",), "int": ("i", "f"), "float": ("i", "f")}
    if any(kind not in allowed[dtypes[name]] for name, kind in zip(numeric, kinds, strict=True)):
        return None
    block = _float_block(frame, numeric)
    floats = np.array([kind == "f" for kind in kinds], dtype=bool)
    whole = np.array([dtypes[name] == "int" for name in numeric], dtype=bool) & floats
    checked = block[:, floats]
    fractional = block[:, whole] != np.floor(block[:, whole])  # NaN != NaN: NaN is whole too
    if np.isinf(checked).any() or (fractional & ~np.isnan(block[:, whole])).any():
        return None
    values = np.empty((len(frame), len(names)), dtype=np.float64, order="F")
    values[:, [names.index(name) for name in numeric]] = block
    for position, name in enumerate(names):
        if dtypes[name] == "category":
            codes = _tier_codes(frame[name])
            if codes is None:
                return None
            values[:, position] = codes
    return values


def _tier_codes(series: pd.Series) -> np.ndarray | None:
    """The training codes of a few tiers (NaN for null), as ``_category_column`` gives them, or
    None where it would find a problem: a value looked up in a dict, not a Categorical built
    per call (~0.5 ms on one learner)."""
    if not _may_hold_tiers(series.dtype):
        return None
    index = _tier_index()
    codes = np.empty(len(series), dtype=np.float64)
    for row, value in enumerate(series.array):
        if pd.isna(value):
            codes[row] = np.nan
        elif isinstance(value, str) and value in index:
            codes[row] = index[value]
        else:
            return None
    return codes


def _may_hold_tiers(dtype: Any) -> bool:
    """Strings, objects or a categorical: the dtypes a tier column may come in."""
    return (
        pd.api.types.is_string_dtype(dtype)
        or pd.api.types.is_object_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


@cache
def _tier_index() -> dict[str, int]:
    return {tier: code for code, tier in enumerate(PRODUCT_TAG_CATEGORIES)}


def _float_block(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """``frame[names].to_numpy(np.float64, na_value=np.nan)`` for a small frame, column by
    column from pandas' own column walk: ``frame[names]`` takes from every block and builds a
    frame first, several times the cost of the conversion on one learner."""
    arrays = _column_arrays(frame)
    block = np.empty((len(frame), len(names)), dtype=np.float64)
    for position, name in enumerate(names):
        array = arrays[name]
        if isinstance(array, np.ndarray):
            block[:, position] = array
        else:
            block[:, position] = array.to_numpy(dtype=np.float64, na_value=np.nan)
    return block


def _column_arrays(frame: pd.DataFrame) -> dict[str, Any]:
    """Each column's array by name (numpy, or a pandas extension array), without building a
    Series per column (~0.1 ms each here): pandas' own column walk, ``DataFrame.items`` minus
    the Series. The column names must be unique (the callers check)."""
    return dict(zip(frame.columns.tolist(), frame._iter_column_arrays(), strict=True))


@cache
def _dtype_kind(dtype: Any) -> str:
    """b (boolean), i (integer), f (float) or o (other) for a column dtype, numpy or pandas."""
    if pd.api.types.is_bool_dtype(dtype):
        return "b"
    if pd.api.types.is_integer_dtype(dtype):
        return "i"
    return "f" if pd.api.types.is_float_dtype(dtype) else "o"


def _lightgbm_values(matrix: pd.DataFrame) -> np.ndarray:
    """The matrix as one column-major float64 array, categories as their codes (NaN if missing).

    LightGBM reads column-major arrays without copying; handing it the DataFrame instead costs
    two more copies of every row, which is most of the scoring time for a million learners.
    The codes are those LightGBM saw in training: the categories are fixed, so they match.
    """
    values = np.empty(matrix.shape, dtype=np.float64, order="F")
    for position, name in enumerate(matrix.columns):
        column = matrix[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            values[:, position] = np.where(codes < 0, np.nan, codes)
        else:
            values[:, position] = column.to_numpy()
    return values


# --- calibration ----------------------------------------------------------------------------------


SMALL_BATCH_ROWS = 256
"""Up to this many rows, LightGBM predicts on one thread: starting its OpenMP team costs more
than the work (measured on 2 busy cores: 14 ms for one row, 0.03 ms on one thread)."""


def _threads(rows: int) -> dict[str, int]:
    """LightGBM's predict options for ``rows`` rows: one thread for a small batch."""
    return {"num_threads": 1} if rows <= SMALL_BATCH_ROWS else {}


def _venn_abers() -> types.ModuleType:
    """The ``venn_abers`` module, imported without its global ``np.seterr`` side effect."""
    saved = np.geterr()
    try:
        from venn_abers import venn_abers
    finally:
        np.seterr(**saved)
    return venn_abers


@dataclass(frozen=True)
class VennAbersCalibration:
    """Inductive Venn-Abers calibration of raw scores, as the library's precomputed arrays.

    Attributes:
        scores: the sorted distinct raw scores of the calibration slice (``c``).
        p0: isotonic fits with a hypothetical label 0, shape ``(len(scores) + 1, 2)``.
        p1: isotonic fits with a hypothetical label 1, same shape.
    """

    scores: np.ndarray
    p0: np.ndarray
    p1: np.ndarray

    @classmethod
    def fit(cls, raw_scores: np.ndarray, outcomes: np.ndarray) -> VennAbersCalibration:
        """Fit on the calibration slice's raw probabilities and 0/1 outcomes."""
        library = _venn_abers()
        two_class = np.column_stack([1.0 - raw_scores, raw_scores])
        with np.errstate(divide="ignore", invalid="ignore"):
            p0, p1, scores = library.calc_p0p1(two_class, outcomes.astype(np.float64))
        return cls(scores=scores, p0=p0, p1=p1)

    def calibrate(self, raw_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(p_churn, p_low, p_high)`` for raw probabilities."""
        two_class = np.column_stack([1.0 - raw_scores, raw_scores])
        with np.errstate(divide="ignore", invalid="ignore"):
            merged, interval = _venn_abers().calc_probs(self.p0, self.p1, self.scores, two_class)
        return merged[:, 1], interval[:, 0], interval[:, 1]

    def save(self, path: Path) -> None:
        """Write the arrays to an ``.npz`` file (no pickle)."""
        np.savez(path, scores=self.scores, p0=self.p0, p1=self.p1)

    @classmethod
    def load(cls, path: Path) -> VennAbersCalibration:
        """Read the arrays written by ``save``."""
        with np.load(path, allow_pickle=False) as arrays:
            return cls(scores=arrays["scores"], p0=arrays["p0"], p1=arrays["p1"])


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
    arrays = _column_arrays(frame)
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
        raw_cal = booster.predict(_lightgbm_values(cal_matrix))
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
        """Uncalibrated LightGBM churn probability per row of ``X``."""
        matrix = self.model_matrix(X)
        if matrix.empty:
            return np.empty(0, dtype=np.float64)
        values = _lightgbm_values(matrix)
        return np.asarray(self.booster.predict(values, **_threads(len(values))), dtype=np.float64)

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
        values = _booster_values(X, self.feature_dtypes)
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
        raw = np.asarray(self.booster.predict(values, **_threads(len(values))), dtype=np.float64)
        return _checked_predictions(self._calibrated(raw, X.index))

    def model_values(self, X: pd.DataFrame) -> np.ndarray:
        """``X`` as the float64 array the booster reads (categories as their training codes).

        Each column is checked as ``predict_with_contributions`` checks it. Rows of the result
        feed ``raw_contributions`` later without building a frame again (the service keeps
        them for the day's learners and explains one row per request).

        Raises:
            FeatureFrameError: naming every missing or mistyped model column of ``X``.
        """
        return _booster_values(X, self.feature_dtypes)

    def raw_contributions(self, values: np.ndarray, *, num_threads: int = 0) -> np.ndarray:
        """TreeSHAP contributions of rows of ``model_values``: the features, then ``bias``.

        Args:
            values: rows of ``model_values``.
            num_threads: LightGBM threads (0: the model's setting); a background job passes 1
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
        values = _booster_values(X, self.feature_dtypes)
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
    "PRODUCT_TAG_CATEGORIES",
    "ChurnModel",
    "FeatureFrameError",
    "VennAbersCalibration",
    "decision_confidence",
    "lightgbm_params",
    "model_feature_dtypes",
    "model_feature_names",
    "to_model_matrix",
]
