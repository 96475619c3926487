"""Tests for rules.conditions: parsing structured conditions and their vectorised masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rules.conditions import (
    AllOf,
    AnyOf,
    ConditionError,
    Leaf,
    evaluate,
    leaf_mask,
    parse_condition,
)

MODEL = frozenset({"p_churn"})


def _mask(op: str, values: list, value: object = None) -> list[bool]:
    leaf = Leaf(feature="x", op=op, value=value)
    return leaf_mask(leaf, pd.Series(values)).tolist()


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("<", 2, [True, False, False, False]),
        ("<=", 2, [True, True, False, False]),
        (">", 2, [False, False, True, False]),
        (">=", 2, [False, True, True, False]),
        ("==", 2, [False, True, False, False]),
        ("!=", 2, [True, False, True, False]),  # a null is not "different from 2"
        ("in", (1, 3), [True, False, True, False]),
        ("is_null", None, [False, False, False, True]),
        ("not_null", None, [True, True, True, False]),
    ],
)
def test_every_op_on_numbers_is_false_on_null_except_is_null(op, value, expected):
    # given 1, 2, 3 and a null; when / then
    assert _mask(op, [1.0, 2.0, 3.0, np.nan], value) == expected


def test_string_comparisons_and_in_lists():
    values = ["PT_001", "PT_003", None]
    assert _mask("==", values, "PT_003") == [False, True, False]
    assert _mask("!=", values, "PT_003") == [True, False, False]
    assert _mask("in", values, ("PT_001", "PT_002")) == [True, False, False]


def test_a_flag_read_as_float_compares_with_true_and_false():
    # given flags coerced to 1.0 / 0.0 / NaN as the scored schema does
    flags = [1.0, 0.0, np.nan]
    assert _mask("==", flags, True) == [True, False, False]
    assert _mask("==", flags, False) == [False, True, False]


def test_parse_builds_the_nested_tree():
    # given a nested YAML condition
    raw = {
        "all": [
            {"feature": "a", "op": ">=", "value": 1},
            {"any": [{"feature": "b", "op": "is_null"}]},
        ]
    }
    # when
    tree = parse_condition(raw)
    # then
    assert isinstance(tree, AllOf)
    assert tree.all[0] == Leaf(feature="a", op=">=", value=1)
    assert isinstance(tree.all[1], AnyOf)
    assert tree.all[1].any[0].op == "is_null"


def test_parse_error_names_the_path_of_the_bad_node():
    raw = {
        "all": [{"feature": "a", "op": ">=", "value": 1}, {"any": [{"feature": "b", "op": "<"}]}]
    }
    with pytest.raises(ConditionError) as error:
        parse_condition(raw)
    assert error.value.path == "condition.all[1].any[0].value"
    assert "needs a value" in error.value.message


def _columns() -> dict[str, pd.Series]:
    return {
        "count": pd.Series([4.0, 4.0, 0.0, 0.0]),
        "p_churn": pd.Series([0.9, 0.1, 0.9, np.nan]),
    }


def test_any_records_which_side_made_it_true():
    # given "count >= 4 or p_churn >= 0.6" on: both, rules only, model only, neither (no model)
    condition = parse_condition(
        {
            "any": [
                {"feature": "count", "op": ">=", "value": 4},
                {"feature": "p_churn", "op": ">=", "value": 0.6},
            ]
        }
    )
    # when
    outcome = evaluate(condition, _columns(), MODEL, rows=4)
    # then
    assert outcome.fired.tolist() == [True, True, True, False]
    assert outcome.rules_side.tolist() == [True, True, False, False]
    assert outcome.model_side.tolist() == [True, False, True, False]


def test_all_needs_every_child_and_then_credits_both_sides():
    condition = parse_condition(
        {
            "all": [
                {"feature": "count", "op": ">=", "value": 4},
                {"feature": "p_churn", "op": ">=", "value": 0.6},
            ]
        }
    )
    outcome = evaluate(condition, _columns(), MODEL, rows=4)
    assert outcome.fired.tolist() == [True, False, False, False]
    assert outcome.rules_side.tolist() == outcome.fired.tolist()
    assert outcome.model_side.tolist() == outcome.fired.tolist()


def test_an_empty_all_is_always_true_and_credits_no_side():
    outcome = evaluate(parse_condition({"all": []}), _columns(), MODEL, rows=4)
    assert outcome.fired.all()
    assert not outcome.rules_side.any()
    assert not outcome.model_side.any()


def test_a_condition_error_reads_as_its_path_then_its_message():
    # given / when
    error = ConditionError("condition.all[0].op", "bad op")
    # then the text a caller prints names the node first
    assert str(error) == "condition.all[0].op: bad op"


@pytest.mark.parametrize("value", [[1, 2], ["PT_001", "PT_003"]])
def test_an_in_list_of_all_numbers_or_all_strings_parses(value):
    # given / when
    leaf = parse_condition({"feature": "x", "op": "in", "value": value})
    # then
    assert leaf == Leaf(feature="x", op="in", value=tuple(value))


def test_an_in_list_mixing_strings_and_numbers_is_refused():
    with pytest.raises(ConditionError, match="needs all strings or all numbers"):
        parse_condition({"feature": "x", "op": "in", "value": [1, "PT_001"]})


def test_an_empty_all_nested_in_an_any_fires_on_every_row():
    # given "any of: (the empty all), count >= 4" on four rows
    condition = parse_condition(
        {"any": [{"all": []}, {"feature": "count", "op": ">=", "value": 4}]}
    )
    # when
    outcome = evaluate(condition, _columns(), MODEL, rows=4)
    # then the empty all makes every row fire, and only the count credits the rules side
    assert outcome.fired.tolist() == [True, True, True, True]
    assert outcome.rules_side.tolist() == [True, True, False, False]
