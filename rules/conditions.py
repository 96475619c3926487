"""Rule conditions as structured data, and their compilation to vectorised boolean masks.

A condition is a tree written in YAML: ``{all: [...]}`` and ``{any: [...]}`` nodes, and leaves
``{feature, op, value}``. Nothing is ever evaluated as a string: each leaf becomes one numpy or
pandas comparison over a whole column.

Operating points: an ordering leaf on a model score may name a threshold instead of a number,
``{feature: p_churn, op: ">=", value: "@early_warning"}``: a named operating point that training
chose on its calibration slice and saved with the model (``RuleSet.with_operating_points``
replaces each name by the champion's number). A leaf whose name is not resolved is false on every
row, like a comparison with the null ``p_churn`` of rules-only mode, the one case it is allowed
(``rules.engine.decide`` refuses model scores with unresolved names).

Null semantics: every comparison is false on a null value (``!=`` included), so a condition on
``p_churn`` simply does not fire when there is no model score; ``is_null`` / ``not_null`` test for
nulls explicitly. An empty ``all: []`` is always true (the default entry rule uses it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

Op = Literal["<", "<=", ">", ">=", "==", "!=", "in", "is_null", "not_null"]
ORDERING_OPS: frozenset[str] = frozenset({"<", "<=", ">", ">="})
NULL_OPS: frozenset[str] = frozenset({"is_null", "not_null"})
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
REFERENCE_PREFIX = "@"
"""An ordering leaf's value ``@name`` names an operating point instead of a number."""
_REFERENCE = re.compile(r"^@[a-z][a-z0-9_]*$")


class ConditionError(ValueError):
    """A malformed condition; ``path`` says where in the tree (``condition.all[1].value``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class Leaf(BaseModel):
    """One comparison ``feature op value``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: StrictStr
    op: Op
    value: Scalar | tuple[Scalar, ...] | None = None

    @property
    def reference(self) -> str | None:
        """The operating point an ordering leaf names (``@early_warning`` -> ``early_warning``)."""
        if self.op in ORDERING_OPS and isinstance(self.value, str):
            return self.value.removeprefix(REFERENCE_PREFIX)
        return None

    @property
    def compares_strings(self) -> bool:
        """True when the value (or every value of an ``in`` list) is a string (not a reference)."""
        if self.reference is not None:
            return False
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        return any(isinstance(item, str) for item in values)


class AllOf(BaseModel):
    """True when every child is true (an empty list is always true)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    all: tuple[Condition, ...]


class AnyOf(BaseModel):
    """True when at least one child is true."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    any: tuple[Condition, ...]


Condition = AllOf | AnyOf | Leaf
AllOf.model_rebuild()
AnyOf.model_rebuild()


def parse_condition(raw: object, path: str = "condition") -> Condition:
    """Turn the YAML structure of a condition into a frozen tree, checking every node.

    Args:
        raw: what ``yaml.safe_load`` produced for the condition.
        path: where ``raw`` sits, used in error messages.

    Raises:
        ConditionError: naming the path of the first malformed node and what is wrong with it.
    """
    if not isinstance(raw, dict):
        raise ConditionError(path, f"expected a mapping of all, any or feature; got {raw!r}")
    group_keys = [key for key in ("all", "any") if key in raw]
    if not group_keys:
        return _parse_leaf(raw, path)
    key = group_keys[0]
    extra = sorted(set(raw) - {key})
    if extra:
        raise ConditionError(path, f"an '{key}' node takes no other keys, found {extra}")
    children = raw[key]
    if not isinstance(children, list):
        raise ConditionError(f"{path}.{key}", f"expected a list of conditions, got {children!r}")
    if key == "any" and not children:
        raise ConditionError(f"{path}.any", "an empty 'any' never fires; give at least one")
    parsed = tuple(parse_condition(child, f"{path}.{key}[{i}]") for i, child in enumerate(children))
    return AllOf(all=parsed) if key == "all" else AnyOf(any=parsed)


def _parse_leaf(raw: dict, path: str) -> Leaf:
    """Validate one ``{feature, op, value}`` leaf, including the value's type for the op."""
    try:
        leaf = Leaf.model_validate(raw)
    except PydanticValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "condition"
        message = first["msg"]
        if field == "value":
            message = f"expected a number, true/false, a string or a list; got {raw['value']!r}"
        raise ConditionError(f"{path}.{field}", message) from None
    problem = _value_problem(leaf, has_value="value" in raw)
    if problem:
        raise ConditionError(f"{path}.value", problem)
    return leaf


def _value_problem(leaf: Leaf, *, has_value: bool) -> str | None:
    """Return why ``leaf.value`` does not suit ``leaf.op``, or None when it does."""
    value, op = leaf.value, leaf.op
    if op in NULL_OPS:
        return f"op '{op}' takes no value, got {value!r}" if has_value else None
    if value is None:
        return f"op '{op}' needs a value"
    if op in ORDERING_OPS:
        if isinstance(value, str) and _REFERENCE.match(value):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"op '{op}' needs a number or an operating point ('@name'), got {value!r}"
        return None
    if op == "in":
        if not isinstance(value, tuple) or not value:
            return f"op 'in' needs a non-empty list, got {value!r}"
        if len({isinstance(item, str) for item in value}) > 1:
            return f"op 'in' needs all strings or all numbers, got {list(value)!r}"
        return None
    if isinstance(value, tuple):
        return f"op '{op}' needs a single value, got a list {list(value)!r} (use 'in')"
    return None


def iter_leaves(condition: Condition, path: str = "condition") -> Iterator[tuple[str, Leaf]]:
    """Yield ``(path, leaf)`` for every leaf of the tree, depth first, in file order."""
    if isinstance(condition, Leaf):
        yield path, condition
        return
    key = "all" if isinstance(condition, AllOf) else "any"
    for i, child in enumerate(getattr(condition, key)):
        yield from iter_leaves(child, f"{path}.{key}[{i}]")


@dataclass(frozen=True)
class Evaluation:
    """A condition's outcome per row, and which side of the blend made it true.

    Attributes:
        fired: the condition holds.
        rules_side: it holds and a true leaf on a rule feature (not a model score) contributed.
        model_side: it holds and a true leaf on a model score column contributed.
    """

    fired: np.ndarray
    rules_side: np.ndarray
    model_side: np.ndarray


def evaluate(
    condition: Condition,
    columns: Mapping[str, pd.Series | np.ndarray],
    model_columns: frozenset[str],
    rows: int,
) -> Evaluation:
    """Evaluate ``condition`` on every row at once.

    Args:
        condition: the parsed tree.
        columns: the frame's columns by name (float for numbers and flags, str for strings), as
            Series or as their values.
        model_columns: score columns whose leaves count as the model side of the blend.
        rows: the number of rows (the columns' common length).
    """
    if isinstance(condition, Leaf):
        fired = leaf_mask(condition, columns[condition.feature])
        off = np.zeros_like(fired)
        is_model = condition.feature in model_columns
        return Evaluation(fired, off if is_model else fired, fired if is_model else off)
    children = condition.all if isinstance(condition, AllOf) else condition.any
    if not children:  # the empty all: always true, and neither side contributed
        return Evaluation(np.ones(rows, bool), np.zeros(rows, bool), np.zeros(rows, bool))
    results = [evaluate(child, columns, model_columns, rows) for child in children]
    combine = np.logical_and if isinstance(condition, AllOf) else np.logical_or
    fired = combine.reduce([result.fired for result in results])
    rules_side = np.logical_or.reduce([result.rules_side for result in results]) & fired
    model_side = np.logical_or.reduce([result.model_side for result in results]) & fired
    return Evaluation(fired, rules_side, model_side)


def leaf_mask(leaf: Leaf, column: pd.Series | np.ndarray) -> np.ndarray:
    """The boolean mask of one leaf over one column; false wherever the column is null.

    The column may be a Series or its values (``Series.to_numpy()``): a caller evaluating many
    leaves converts each column once, which is most of a one-row evaluation's cost.
    """
    values = column.to_numpy() if isinstance(column, pd.Series) else column
    if leaf.reference is not None:  # unresolved: rules-only mode, see the module docstring
        return np.zeros(len(values), dtype=bool)
    present = ~pd.isna(values)
    if leaf.op == "is_null":
        return ~present
    if leaf.op == "not_null":
        return present
    if leaf.op == "in":
        wanted = list(leaf.value) if leaf.compares_strings else [float(v) for v in leaf.value]
        return np.isin(values, wanted) & present
    compare = {
        "<": np.less,
        "<=": np.less_equal,
        ">": np.greater,
        ">=": np.greater_equal,
        "==": np.equal,
        "!=": np.not_equal,
    }[leaf.op]
    if leaf.compares_strings:
        return compare(values.astype(object), leaf.value) & present
    # Flags arrive as floats (1.0/0.0), so ``value: true`` compares as 1.0.
    return compare(values, float(leaf.value)) & present


def resolve_references(condition: Condition, points: Mapping[str, float]) -> Condition:
    """The condition with each ``@name`` leaf value replaced by ``points[name]``.

    Raises:
        KeyError: naming the first operating point ``points`` lacks.
    """
    if isinstance(condition, Leaf):
        if condition.reference is None:
            return condition
        return condition.model_copy(update={"value": float(points[condition.reference])})
    if isinstance(condition, AllOf):
        return AllOf(all=tuple(resolve_references(child, points) for child in condition.all))
    return AnyOf(any=tuple(resolve_references(child, points) for child in condition.any))
