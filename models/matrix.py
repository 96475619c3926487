"""The model's columns: a feature frame checked and laid out as the booster reads it.

Every catalog feature is a model column (``model_feature_names``), typed as the catalog says
(``model_feature_dtypes``). ``to_model_matrix`` checks a frame's columns and types and gives the
typed matrix; ``booster_values`` and ``lightgbm_values`` give the one column-major float64 array
LightGBM predicts on without copying (categories as the codes it saw in training).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features.catalog import FeatureDtype, load_catalog
from features.vocabulary import PRODUCT_TAGS

PRODUCT_TAG_CATEGORIES: tuple[str, ...] = tuple(PRODUCT_TAGS)

SMALL_BATCH_ROWS = 256
"""Up to this many rows, LightGBM predicts on one thread: starting its OpenMP team costs more
than the work (measured on 2 busy cores: 14 ms for one row, 0.03 ms on one thread)."""
PREDICT_CHUNK_ROWS = 131_072
"""Rows that ``chunk_values`` types and converts at a time (``ChurnModel.raw_probability``).

A million learners' matrix is two fresh ~0.5 GB arrays (the typed columns, then LightGBM's
column-major copy); on this project's virtual machines a fresh page costs far more than the copy
into it (the host backs it on first touch), ~1.5 s of CPU for the two, single-threaded before
LightGBM starts. Chunks reuse one ~70 MB array and the allocator's small blocks: 921k learners
5.6-5.9 s -> 3.7-4.0 s wall (system time 2.0-2.3 -> 0.1-0.4 s), the same numbers. The chunk is
large enough that LightGBM's per-call set-up (its thread team, ~ms) is noise.
"""


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

    Every input column is checked here (``_typed_columns``); the re-check only confirms what the
    construction guarantees (float64 or the fixed Categorical, in order), and costs ~15 ms per
    call on one row, which matters to the service's one-learner requests.

    Raises:
        FeatureFrameError: naming every missing column and every mistyped column.
    """
    return pd.DataFrame(_typed_columns(frame, dtypes), index=frame.index)


def _typed_columns(frame: pd.DataFrame, dtypes: Mapping[str, FeatureDtype]) -> dict[str, Any]:
    """The model columns of ``frame`` by name, in ``dtypes``' order, each checked and typed
    (float64 arrays, the tier a Categorical).

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
    return columns


def booster_values(frame: pd.DataFrame, dtypes: Mapping[str, FeatureDtype]) -> np.ndarray:
    """``lightgbm_values(_typed_matrix(frame, dtypes))``: the booster's array, checked.

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
    return lightgbm_values(_typed_matrix(frame, dtypes))


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
    arrays = column_arrays(frame)
    block = np.empty((len(frame), len(names)), dtype=np.float64)
    for position, name in enumerate(names):
        array = arrays[name]
        if isinstance(array, np.ndarray):
            block[:, position] = array
        else:
            block[:, position] = array.to_numpy(dtype=np.float64, na_value=np.nan)
    return block


def column_arrays(frame: pd.DataFrame) -> dict[str, Any]:
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


def lightgbm_values(matrix: pd.DataFrame, out: np.ndarray | None = None) -> np.ndarray:
    """The matrix as one column-major float64 array, categories as their codes (NaN if missing).

    LightGBM reads column-major arrays without copying; handing it the DataFrame instead costs
    two more copies of every row, which is most of the scoring time for a million learners.
    The codes are those LightGBM saw in training: the categories are fixed, so they match.

    Args:
        matrix: a model matrix (``to_model_matrix``).
        out: a column-major float64 array of the matrix's shape to fill and return (a buffer
            reused across chunks); None: a new one.

    Raises:
        ValueError: ``out`` is not a column-major float64 array of the matrix's shape.
    """
    values = np.empty(matrix.shape, dtype=np.float64, order="F") if out is None else out
    if values.shape != matrix.shape or values.dtype != np.float64 or not values.flags.f_contiguous:
        raise ValueError(
            f"out: expected a column-major float64 array of shape {matrix.shape}, got "
            f"{values.dtype} {values.shape}"
        )
    return _filled(values, column_arrays(matrix).values())


def _filled(values: np.ndarray, columns: Iterable[Any]) -> np.ndarray:
    """``values`` with each of ``columns`` (float64 arrays or the tier's Categorical) in its
    column, in order, categories as their codes (NaN if missing)."""
    for position, column in enumerate(columns):
        if isinstance(column, pd.Categorical):
            values[:, position] = np.where(column.codes < 0, np.nan, column.codes)
        else:
            values[:, position] = column
    return values


def chunk_values(
    frame: pd.DataFrame, dtypes: Mapping[str, FeatureDtype]
) -> Iterator[tuple[slice, np.ndarray]]:
    """The booster's arrays of ``frame``'s rows, ``PREDICT_CHUNK_ROWS`` at a time: (the rows,
    their column-major array), the arrays of a large frame all in one reused buffer (see
    ``PREDICT_CHUNK_ROWS``), so each is valid until the next is asked for.

    Raises:
        FeatureFrameError: naming every missing column and every mistyped column, counted over
            the whole frame (also when the problem is met in a chunk).
    """
    chunk_rows = PREDICT_CHUNK_ROWS
    if len(frame) <= chunk_rows:
        if len(frame):
            yield slice(0, len(frame)), booster_values(frame, dtypes)
        else:
            _typed_columns(frame, dtypes)  # an empty frame's columns are checked all the same
        return
    buffer = np.empty(chunk_rows * len(dtypes), dtype=np.float64)
    for start in range(0, len(frame), chunk_rows):
        rows = frame.iloc[start : start + chunk_rows]
        try:
            columns = _typed_columns(rows, dtypes)
        except FeatureFrameError:
            _typed_columns(frame, dtypes)  # the whole frame's count of each
            raise
        # Straight into the buffer: a typed frame between (``to_model_matrix``) was one more
        # copy of the chunk, and its pandera re-check ~0.2 s per chunk on the critical path.
        values = buffer[: len(rows) * len(columns)].reshape((len(rows), len(columns)), order="F")
        yield slice(start, start + len(rows)), _filled(values, columns.values())


__all__ = [
    "PREDICT_CHUNK_ROWS",
    "PRODUCT_TAG_CATEGORIES",
    "SMALL_BATCH_ROWS",
    "FeatureFrameError",
    "booster_values",
    "chunk_values",
    "column_arrays",
    "lightgbm_values",
    "model_feature_dtypes",
    "model_feature_names",
    "to_model_matrix",
]
