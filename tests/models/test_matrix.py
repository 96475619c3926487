"""Tests for models.matrix: the model's columns, their types and the booster's array."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.catalog import load_catalog
from models.matrix import (
    PRODUCT_TAG_CATEGORIES,
    FeatureFrameError,
    _block_values,
    _typed_matrix,
    booster_values,
    lightgbm_values,
    model_feature_dtypes,
    model_feature_names,
    to_model_matrix,
)
from tests.models.synthetic import make_feature_frame


def test_model_uses_every_catalog_feature_in_catalog_order():
    # given the catalog / when
    names = model_feature_names()
    # then
    assert names == [spec.name for spec in load_catalog().features]


def test_model_matrix_types_columns_and_ignores_extra_ones():
    # given a feature frame with keys, a label column and reversed feature columns
    frame, outcomes = make_feature_frame(20, seed=5)
    frame = frame[frame.columns[::-1]].assign(churned=outcomes)
    frame.index = pd.RangeIndex(100, 120)
    # when
    matrix = to_model_matrix(frame)
    # then
    assert list(matrix.columns) == model_feature_names()
    assert matrix.index.equals(frame.index)
    categorical = matrix.pop("product_tag")
    assert list(categorical.cat.categories) == list(PRODUCT_TAG_CATEGORIES)
    assert set(matrix.dtypes) == {np.dtype("float64")}
    assert matrix["is_cold_start"].isin([0.0, 1.0]).all()


def test_model_matrix_accepts_nullable_counts_and_json_style_flags():
    # given a nullable Int64 count with a missing value and a flag column of True/False/None
    frame, _ = make_feature_frame(3, seed=6)
    frame["lessons_7d"] = pd.array([2, None, 0], dtype="Int64")
    frame["risk_inactive_7d"] = pd.Series([True, None, False], dtype=object)
    # when
    matrix = to_model_matrix(frame)
    # then
    np.testing.assert_array_equal(matrix["lessons_7d"], [2.0, np.nan, 0.0])
    np.testing.assert_array_equal(matrix["risk_inactive_7d"], [1.0, np.nan, 0.0])


def test_model_matrix_names_every_missing_and_mistyped_column():
    # given a frame without active_days_7d and with tenure_days stored as Python objects
    frame, _ = make_feature_frame(4, seed=7)
    frame = frame.drop(columns="active_days_7d")
    frame["tenure_days"] = frame["tenure_days"].astype(object)
    # when
    with pytest.raises(FeatureFrameError) as raised:
        to_model_matrix(frame)
    # then
    assert str(raised.value) == (
        "feature frame: missing columns ['active_days_7d']; "
        "column tenure_days has dtype object, expected float"
    )


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("product_tag", ["PT_001", "PT_009", "PT_009", None], r"outside .*\['PT_009'\] \(2 rows\)"),
        ("product_tag", [1, 2, 3, 1], "column product_tag has dtype int64, expected category"),
        ("risk_inactive_7d", [0, 1, 2, 1], "risk_inactive_7d has 1 values other than 0/1"),
        ("risk_inactive_7d", ["yes", "no", "no", "no"], "risk_inactive_7d has dtype str"),
        ("lessons_7d", [1.0, 2.5, 3.0, np.nan], r"lessons_7d has 1 non-integer values \(e.g. 2.5"),
        ("mrr", [1.0, np.inf, 3.0, -np.inf], "column mrr has 2 infinite values"),
        ("tenure_days", [True, False, True, True], "tenure_days has dtype bool, expected float"),
    ],
)
def test_model_matrix_rejects_mistyped_values_with_a_clear_message(column, values, message):
    # given a frame with one bad column
    frame, _ = make_feature_frame(4, seed=8)
    frame[column] = values
    # when / then
    with pytest.raises(FeatureFrameError, match=message):
        to_model_matrix(frame)


def _per_column(frame: pd.DataFrame) -> np.ndarray:
    return lightgbm_values(_typed_matrix(frame, model_feature_dtypes()))


def test_the_boosters_array_fills_a_given_buffer_and_refuses_one_of_another_shape():
    # given a model matrix of 5 rows and a reused column-major buffer of its shape
    matrix = _typed_matrix(make_feature_frame(5, seed=10)[0], model_feature_dtypes())
    buffer = np.full(matrix.shape, -1.0, order="F")
    # when the array is built into it
    values = lightgbm_values(matrix, buffer)
    # then it is the buffer, holding what a new array would
    assert values is buffer
    np.testing.assert_array_equal(buffer, lightgbm_values(matrix))
    # and a buffer of another shape or a row-major one is refused, naming the shape wanted
    for wrong in (np.empty((4, matrix.shape[1]), order="F"), np.empty(matrix.shape, order="C")):
        with pytest.raises(ValueError, match=rf"shape \({matrix.shape[0]}, {matrix.shape[1]}\)"):
            lightgbm_values(matrix, wrong)


@pytest.mark.parametrize("rows", [1, 4, 300], ids=["one row", "a request", "past the block"])
def test_the_boosters_array_of_a_small_frame_is_the_per_column_one(rows):
    # given features with the dtypes the feature assembly gives: nullable counts (one missing),
    # plain counts, boolean flags, floats with a NaN, the tier as text; columns reordered
    frame, _ = make_feature_frame(rows, seed=9)
    frame["lessons_7d"] = pd.array([None, *range(rows - 1)], dtype="Int64")
    frame["risk_inactive_7d"] = np.arange(rows) % 2 == 0
    frame.loc[frame.index[0], "tenure_days"] = np.nan
    frame["product_tag"] = pd.array(frame["product_tag"].astype(str), dtype="str")
    frame = frame[frame.columns[::-1]]
    # when the booster's array is built (in one block up to SMALL_BATCH_ROWS rows)
    values = booster_values(frame, model_feature_dtypes())
    # then it is the per-column array, value for value and column-major
    np.testing.assert_array_equal(values, _per_column(frame))
    assert values.flags.f_contiguous
    # and the block conversion can take such a frame (beyond SMALL_BATCH_ROWS it is not asked)
    assert _block_values(frame, model_feature_dtypes()) is not None


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("product_tag", ["PT_001", "PT_009", "PT_009", None]),
        ("risk_inactive_7d", [0, 1, 2, 1]),
        ("risk_inactive_7d", pd.Series([True, None, False, True], dtype=object)),
        ("lessons_7d", [1.0, 2.5, 3.0, np.nan]),
        ("mrr", [1.0, np.inf, 3.0, -np.inf]),
        ("tenure_days", [True, False, True, True]),
    ],
)
def test_a_small_frame_the_block_cannot_take_gets_the_per_column_values_or_error(column, values):
    # given a small frame with one column the one-block conversion does not check
    frame, _ = make_feature_frame(4, seed=8)
    frame[column] = values
    # when / then the booster's array is the per-column one, or the same error
    try:
        expected = _per_column(frame)
    except FeatureFrameError as error:
        with pytest.raises(FeatureFrameError) as raised:
            booster_values(frame, model_feature_dtypes())
        assert str(raised.value) == str(error)
    else:
        np.testing.assert_array_equal(booster_values(frame, model_feature_dtypes()), expected)
