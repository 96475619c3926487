"""The booster's trees compiled to native code: LightGBM's probabilities to the bit, or LightGBM."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pytest
import tl2cgen

from models import compiled as compiled_module
from models.compiled import (
    MIN_ROWS,
    ZERO,
    boundary_rows,
    compile_booster,
    probabilities,
)

ALL_ONES_LOW = 3.4999999999999996
"""A double whose low 32 bits are all ones: tl2cgen's compiled code reads it as missing."""


def _booster(seed: int = 0) -> lgb.Booster:
    """A small binary model over a numerical column with NaNs (NaN-aware splits), a
    categorical column and a plain one."""
    generator = np.random.default_rng(seed)
    rows = 4_000
    numeric = generator.normal(3.5, 1.0, rows)
    numeric[generator.random(rows) < 0.2] = np.nan
    category = generator.integers(0, 4, rows).astype(float)
    plain = generator.random(rows)
    signal = np.nan_to_num(numeric, nan=6.0) - 3.5 + (category == 2) + plain
    label = (signal + generator.normal(0, 0.5, rows) > 1.0).astype(int)
    data = lgb.Dataset(
        np.column_stack([numeric, category, plain]), label=label, categorical_feature=[1]
    )
    params = {"objective": "binary", "num_leaves": 8, "verbose": -1, "seed": seed}
    return lgb.train({**params, "deterministic": True}, data, num_boost_round=40)


def _rows(booster: lgb.Booster, count: int, seed: int = 1) -> np.ndarray:
    """Rows of the model's boundaries, some holding tiny values, NaNs and all-ones low bits."""
    rows = boundary_rows(booster, count, seed=seed)
    generator = np.random.default_rng(seed)
    rows[generator.random(count) < 0.05, 0] = ALL_ONES_LOW
    rows[generator.random(count) < 0.05, 2] = -ZERO / 3
    return rows


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return _booster()


def test_compiled_trees_give_lightgbms_probabilities_bit_for_bit(booster, tmp_path):
    # Given a model compiled, and rows at every threshold with NaNs, tiny values and all-ones
    # low bits, column-major as the model's matrix comes
    compiled = compile_booster(booster, tmp_path)
    assert compiled is not None and compiled.library.exists()
    rows = np.asfortranarray(_rows(booster, 2 * MIN_ROWS))
    # When a large batch is predicted
    predicted = probabilities(booster, rows, {})
    # Then it is LightGBM's, to the last bit, and the compiled trees made it
    assert np.array_equal(predicted, booster.predict(rows))
    assert np.array_equal(predicted, compiled.probabilities(rows, booster))


def test_rows_read_as_missing_by_the_compiled_code_are_predicted_by_lightgbm(booster, tmp_path):
    # Given rows whose NaN-aware column holds a value the compiled code reads as missing
    compiled = compile_booster(booster, tmp_path)
    rows = _rows(booster, MIN_ROWS)
    rows[:, 0] = ALL_ONES_LOW
    lightgbm = booster.predict(rows)
    # (the compiled code alone takes it for missing: its results differ from LightGBM's)
    alone = compiled.predictor.predict(tl2cgen.DMatrix(rows)).reshape(-1)
    assert not np.array_equal(alone, lightgbm)
    # When they are predicted, Then the result is LightGBM's
    assert np.array_equal(probabilities(booster, rows, {}), lightgbm)


def test_batches_predicted_on_several_threads_at_once_are_each_lightgbms(booster, tmp_path):
    # Given a compiled model, as a service holds it, and four different batches
    compile_booster(booster, tmp_path)
    batches = [_rows(booster, MIN_ROWS, seed=seed) for seed in range(4)]
    # When they are predicted on four threads at once
    with ThreadPoolExecutor(max_workers=4) as threads:
        predicted = list(threads.map(lambda rows: probabilities(booster, rows, {}), batches))
    # Then each is LightGBM's for its own rows
    for rows, result in zip(batches, predicted, strict=True):
        assert np.array_equal(result, booster.predict(rows))


def test_a_small_batch_is_predicted_by_lightgbm(booster, tmp_path, monkeypatch):
    # Given a compiled model whose compiled predict would fail if called
    compiled = compile_booster(booster, tmp_path)

    def not_for_small_batches(*args, **kwargs):
        raise AssertionError("the compiled trees predicted a small batch")

    monkeypatch.setattr(type(compiled), "probabilities", not_for_small_batches)
    rows = _rows(booster, MIN_ROWS - 1)
    # When fewer than MIN_ROWS rows are predicted, Then LightGBM gives them
    assert np.array_equal(probabilities(booster, rows, {"num_threads": 1}), booster.predict(rows))


def test_without_a_c_compiler_lightgbm_predicts_with_a_warning(tmp_path, monkeypatch, caplog):
    # Given a machine without a C compiler and a model not compiled yet
    booster = _booster(seed=2)
    monkeypatch.setenv("CC", "no-such-compiler-lstep")
    # When it is compiled
    with caplog.at_level(logging.WARNING, logger="lstep"):
        compiled = compile_booster(booster, tmp_path)
    # Then nothing is compiled, one warning says why and what would, and LightGBM predicts
    assert compiled is None
    assert not list(tmp_path.glob("*.so"))
    (warned,) = [record.getMessage() for record in caplog.records if record.name == "lstep"]
    assert "no C compiler" in warned and "LightGBM predicts" in warned
    rows = _rows(booster, MIN_ROWS)
    assert np.array_equal(probabilities(booster, rows, {}), booster.predict(rows))


def test_a_compiler_that_fails_leaves_lightgbm_predicting_and_says_so(
    tmp_path, monkeypatch, caplog
):
    # Given a C compiler that fails on the trees' code (`false` exits 1, saying nothing)
    booster = _booster(seed=5)
    monkeypatch.setenv("CC", "false")
    # When the model is compiled
    with caplog.at_level(logging.WARNING, logger="lstep"):
        compiled = compile_booster(booster, tmp_path)
    # Then nothing is compiled, the warning names the compiler, and LightGBM predicts
    assert compiled is None
    (warned,) = [record.getMessage() for record in caplog.records if record.name == "lstep"]
    assert "false failed" in warned
    rows = _rows(booster, MIN_ROWS)
    assert np.array_equal(probabilities(booster, rows, {}), booster.predict(rows))


def test_an_unexpected_error_while_compiling_never_fails_the_load(tmp_path, monkeypatch, caplog):
    # Given a model tl2cgen cannot read (an error no one planned for)
    booster = _booster(seed=6)

    def unreadable(model):
        raise RuntimeError("unsupported model")

    monkeypatch.setattr("treelite.frontend.from_lightgbm", unreadable)
    # When it is compiled, Then a warning names the error and LightGBM predicts
    with caplog.at_level(logging.WARNING, logger="lstep"):
        assert compile_booster(booster, tmp_path) is None
    assert "unsupported model" in caplog.text
    rows = _rows(booster, MIN_ROWS)
    assert np.array_equal(probabilities(booster, rows, {}), booster.predict(rows))


def test_a_cached_library_that_predicts_otherwise_is_built_again(tmp_path):
    # Given the cached library of another model under this model's name
    booster, other = _booster(seed=3), _booster(seed=4)
    elsewhere = compile_booster(other, tmp_path / "other")
    library = tmp_path / elsewhere.library.name.replace(
        compiled_module._model_key(other), compiled_module._model_key(booster)
    )
    library.write_bytes(elsewhere.library.read_bytes())
    # When this model is compiled into that cache
    compiled = compile_booster(booster, tmp_path)
    # Then the library was built again and predicts as LightGBM does
    assert compiled is not None and compiled.library == library
    assert library.read_bytes() != elsewhere.library.read_bytes()
    rows = _rows(booster, MIN_ROWS)
    assert np.array_equal(probabilities(booster, rows, {}), booster.predict(rows))


def test_a_compiled_library_is_reused_not_built_again(booster, tmp_path, monkeypatch):
    # Given a model compiled once
    first = compile_booster(booster, tmp_path)
    built = []
    monkeypatch.setattr(compiled_module, "_build", lambda *args: built.append(args))
    # When it is compiled again (another process, the next day), Then the library is reused
    again = compile_booster(booster, tmp_path)
    assert again is not None and again.library == first.library
    assert built == []


def test_a_library_generated_with_other_parameters_is_not_reused(booster, tmp_path, monkeypatch):
    # Given a model compiled with the code generator's parameters of this version (quantized)
    first = compile_booster(booster, tmp_path)
    # When the same model is compiled with other parameters (a library of an earlier version)
    monkeypatch.setattr(compiled_module, "CODEGEN_PARAMS", {})
    again = compile_booster(booster, tmp_path)
    # Then that is another library, built beside the first, and both predict as LightGBM does
    assert first is not None and again is not None
    assert again.library != first.library and first.library.exists()
    rows = _rows(booster, MIN_ROWS)
    for compiled in (first, again):
        assert np.array_equal(compiled.probabilities(rows, booster), booster.predict(rows))


def test_boundary_rows_hold_every_threshold_and_the_doubles_beside_it(booster):
    # Given the model's numerical splits
    splits = [s for s in compiled_module._splits(booster) if s["decision_type"] != "=="]
    assert splits
    # When boundary rows are drawn
    rows = boundary_rows(booster, 20_000)
    # Then each threshold, and its neighbouring doubles, are among its feature's values
    for split in splits:
        column, threshold = rows[:, split["split_feature"]], float(split["threshold"])
        for value in (threshold, *(np.nextafter(threshold, way) for way in (-np.inf, np.inf))):
            assert (column == value).any(), (split, value)
    assert np.isnan(rows).any(axis=0).all()  # and NaN in every column


@pytest.mark.parametrize(
    ("split", "turns"),
    [
        ({"decision_type": "<=", "missing_type": "None", "threshold": 0.0}, True),
        ({"decision_type": "<=", "missing_type": "None", "threshold": -ZERO}, True),
        ({"decision_type": "<=", "missing_type": "None", "threshold": ZERO}, False),
        ({"decision_type": "<=", "missing_type": "None", "threshold": 0.5}, False),
        ({"decision_type": "<=", "missing_type": "Zero", "threshold": 0.5}, True),
        ({"decision_type": "<=", "missing_type": "NaN", "threshold": 0.5}, False),
        ({"decision_type": "==", "missing_type": "None", "threshold": "0||2"}, False),
    ],
)
def test_tiny_values_are_zeroed_only_where_a_split_could_tell_them_from_zero(split, turns):
    assert compiled_module._turns_near_zero(split) is turns


def _split(feature: int, threshold: float | str, decision: str = "<=") -> dict:
    return {"split_feature": feature, "threshold": threshold, "decision_type": decision}


def test_the_row_order_keys_on_the_most_split_on_numerical_features_within_its_bits():
    # Given splits: feature 2 used three times (two thresholds), feature 0 twice, feature 1
    # once, feature 3 only in categorical splits
    splits = [
        _split(2, 1.0), _split(2, 1.0), _split(2, 5.0), _split(0, 0.5), _split(0, -1.0),
        _split(1, 7.0), _split(3, "0||2", "=="), _split(3, "1", "=="), _split(3, "2", "=="),
        _split(3, "0", "=="),
    ]  # fmt: skip
    # When the order is made of them
    order = compiled_module.RowOrder.of_splits(splits)
    # Then it keys on 2, then 0, then 1 (the categorical feature left out), each with its
    # distinct thresholds ascending
    assert [feature for feature, _ in order.edges] == [2, 0, 1]
    assert [list(thresholds) for _, thresholds in order.edges] == [[1.0, 5.0], [-1.0, 0.5], [7.0]]


def test_a_feature_whose_bins_do_not_fit_the_key_is_left_out(monkeypatch):
    # Given a key of 3 bits, and a feature of 4 thresholds (5 bins: 3 bits) used most, one of
    # 2 thresholds (2 bits) next, one of 1 threshold (1 bit) last
    monkeypatch.setattr(compiled_module, "KEY_BITS", 4)
    splits = [_split(0, t) for t in (1.0, 2.0, 3.0, 4.0)] + [_split(1, 1.0), _split(1, 2.0)]
    splits.append(_split(2, 0.0))
    # When the order is made, Then the first and the last fit (3 + 1 bits), the second not
    order = compiled_module.RowOrder.of_splits(splits)
    assert [feature for feature, _ in order.edges] == [0, 2]


def test_rows_are_sequenced_by_their_bins_first_feature_first_ties_in_their_own_order():
    # Given an order on feature 1 (threshold 0) then feature 0 (thresholds 10, 20)
    order = compiled_module.RowOrder(((1, np.array([0.0])), (0, np.array([10.0, 20.0]))))
    rows = np.array(
        [[25.0, 1.0], [5.0, 1.0], [15.0, -1.0], [5.0, -1.0], [np.nan, -1.0], [6.0, 1.0]]
    )
    # When the rows are sequenced
    sequence = order.sequence(rows)
    # Then feature 1's low side comes first (by feature 0's bin, NaN in the last), ties kept
    assert sequence.tolist() == [3, 2, 4, 1, 5, 0]


def test_predictions_made_in_chunks_out_of_order_come_back_in_the_rows_order(
    booster, tmp_path, monkeypatch
):
    # Given chunks far smaller than the batch, and rows in no particular order
    monkeypatch.setattr(compiled_module, "CHUNK_ROWS", 1_000)
    compiled = compile_booster(booster, tmp_path)
    rows = _rows(booster, 3 * MIN_ROWS + 17, seed=5)
    # (the order moves rows: predicting in the rows' own order would not be this one)
    sequence = compiled.order.sequence(rows)
    assert not np.array_equal(sequence, np.arange(len(rows)))
    # When the batch is predicted
    predicted = compiled.probabilities(rows, booster)
    # Then each row has its own probability: LightGBM's, to the last bit
    assert np.array_equal(predicted, booster.predict(rows))


def test_batches_made_row_major_in_one_kept_buffer_each_get_their_own_rows(
    booster, tmp_path, monkeypatch
):
    # Given a kept buffer of 9,000 rows, and column-major batches of 9,000 then 5,000 rows
    monkeypatch.setattr(compiled_module, "SCRATCH_ROWS", 9_000)
    compiled = compile_booster(booster, tmp_path)
    first = np.asfortranarray(_rows(booster, 9_000, seed=7))
    second = np.asfortranarray(_rows(booster, 5_000, seed=8))
    # When both are predicted in turn
    predicted_first = compiled.probabilities(first, booster)
    buffer = compiled.scratch["rows"]
    predicted_second = compiled.probabilities(second, booster)
    # Then each is LightGBM's (the second never reads the first's rows), through one buffer
    assert np.array_equal(predicted_first, booster.predict(first))
    assert np.array_equal(predicted_second, booster.predict(second))
    assert compiled.scratch["rows"] is buffer and buffer.shape == (9_000, first.shape[1])
    # and a batch beyond the buffer gets an array of its own, the buffer left as it was
    kept = buffer.copy()
    third = np.asfortranarray(_rows(booster, 9_001, seed=9))
    assert np.array_equal(compiled.probabilities(third, booster), booster.predict(third))
    assert np.array_equal(compiled.scratch["rows"], kept, equal_nan=True)
