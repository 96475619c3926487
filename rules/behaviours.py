"""Behaviour tags BT_001..BT_008 as data (``behaviours.yaml``), and their vectorised computation.

A behaviour tag is a condition over the window features, in the grammar of the transition rules
(``rules.conditions``). A learner may hold several: :func:`behaviour_tags` gives each learner the
ids of the tags they hold, sorted and joined by ",", or "" for none. The tags personalise the
campaigns (``rules.campaigns``): a trigger may require one, a cadence step may prefer a channel
for one, and the templates read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from rules.columns import Columns
from rules.conditions import Condition, ConditionError, evaluate, iter_leaves, parse_condition
from rules.errors import RulesError

BEHAVIOURS_FILE = "behaviours.yaml"
SEPARATOR = ","
"""Joins the ids a learner holds in the ``behaviour_tags`` column."""


class Behaviour(BaseModel):
    """One behaviour tag: an id, a name and the condition a learner meets to hold it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^BT_\d{3}$")
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    condition: Condition


def load_behaviours(
    directory: Traversable | Path, known_features: Iterable[str], read_yaml
) -> tuple[Behaviour, ...]:
    """Load ``behaviours.yaml`` from a rules directory; none when the file is absent.

    Args:
        directory: the rules directory.
        known_features: the columns a condition may read.
        read_yaml: the rules loader's reader (returns the file's path and mapping).

    Raises:
        RulesError: naming the file, the behaviour id and the field of the first problem.
    """
    if not (directory / BEHAVIOURS_FILE).is_file():
        return ()
    file, content = read_yaml(directory, BEHAVIOURS_FILE)
    extra = sorted(set(content) - {"behaviours"})
    if extra:
        raise RulesError(file, f"unknown top-level keys {extra}", field=extra[0])
    raw_list = content.get("behaviours")
    if not isinstance(raw_list, list):
        raise RulesError(file, "expected a list of behaviour tags", field="behaviours")
    behaviours = tuple(_parse(raw, index, file) for index, raw in enumerate(raw_list))
    known = set(known_features)
    seen: set[str] = set()
    for behaviour in behaviours:
        if behaviour.id in seen:
            raise RulesError(file, "this id is used twice", rule_id=behaviour.id, field="id")
        seen.add(behaviour.id)
        for path, leaf in iter_leaves(behaviour.condition):
            if leaf.feature not in known:
                raise RulesError(
                    file,
                    f"unknown feature {leaf.feature!r}",
                    rule_id=behaviour.id,
                    field=f"{path}.feature",
                )
            if leaf.compares_strings:
                raise RulesError(
                    file,
                    "behaviour conditions compare numbers only",
                    rule_id=behaviour.id,
                    field=f"{path}.value",
                )
    return behaviours


def _parse(raw: object, index: int, file: str) -> Behaviour:
    if not isinstance(raw, dict):
        raise RulesError(file, f"expected a mapping, got {raw!r}", field=f"behaviours[{index}]")
    behaviour_id = str(raw.get("id", f"#{index + 1}"))
    fields = dict(raw)
    try:
        if "condition" in fields:
            fields["condition"] = parse_condition(fields["condition"])
        return Behaviour.model_validate(fields)
    except ConditionError as error:
        raise RulesError(file, error.message, rule_id=behaviour_id, field=error.path) from None
    except PydanticValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise RulesError(file, first["msg"], rule_id=behaviour_id, field=field) from None


def behaviour_features(behaviours: Sequence[Behaviour]) -> list[str]:
    """Every feature the behaviour conditions read, sorted."""
    return sorted({leaf.feature for b in behaviours for _, leaf in iter_leaves(b.condition)})


def behaviour_masks(behaviours: Sequence[Behaviour], frame: pd.DataFrame | Columns) -> np.ndarray:
    """A (behaviours x learners) boolean array: who holds which tag.

    A feature missing from ``frame`` reads as null, so its leaves are false. ``frame`` may be
    the engine's ``rules.columns.Columns`` (read alike, without building Series).
    """
    rows = len(frame)
    columns = {name: _as_floats(frame, name, rows) for name in behaviour_features(behaviours)}
    masks = np.zeros((len(behaviours), rows), bool)
    for i, behaviour in enumerate(behaviours):
        masks[i] = evaluate(behaviour.condition, columns, frozenset(), rows).fired
    return masks


def _as_floats(frame: pd.DataFrame | Columns, name: str, rows: int) -> np.ndarray:
    """A column's values as floats (non-numbers and a missing column read as null)."""
    if name not in frame:
        return np.full(rows, np.nan)
    column = frame[name]  # a Series, or an array of the engine's ``rules.columns.Columns``
    if column.dtype == np.float64:  # the engine's coerced features: no conversion to pay for
        return np.asarray(column)
    return np.asarray(pd.to_numeric(column, errors="coerce"), dtype=float)


def behaviour_tags(behaviours: Sequence[Behaviour], frame: pd.DataFrame | Columns) -> np.ndarray:
    """Each learner's behaviour tags: sorted ids joined by ",", "" for none (object array)."""
    return BehaviourLookup.of(behaviours, frame).tags()


def holds(tags: pd.Series | np.ndarray, behaviour_id: str) -> np.ndarray:
    """Which learners hold ``behaviour_id``, from a ``behaviour_tags`` column."""
    return BehaviourLookup(tags).holds(behaviour_id)


class BehaviourLookup:
    """Answers "who holds BT_x" for one ``behaviour_tags`` column, many times, cheaply.

    The column has few distinct values (combinations of eight tags), so it is factorised once
    (a hash pass) and each question is answered on the distinct values, then spread by code.
    """

    def __init__(self, tags: pd.Series | np.ndarray) -> None:
        column = tags if isinstance(tags, pd.Series) else pd.Series(np.asarray(tags, dtype=object))
        codes, uniques = pd.factorize(column)  # Arrow strings: a dictionary encode
        self._codes = np.asarray(codes)
        self._uniques = np.asarray(uniques, dtype=object)
        self._held = [set(str(value).split(SEPARATOR)) for value in uniques]

    @classmethod
    def of(cls, behaviours: Sequence[Behaviour], frame: pd.DataFrame | Columns) -> BehaviourLookup:
        """The tags ``behaviours`` give each learner of ``frame``, with no column to factorise.

        Vectorised: the tags a learner holds form a bit pattern; each distinct pattern is joined
        once, and the patterns are the lookup's codes.
        """
        ordered = sorted(behaviours, key=lambda behaviour: behaviour.id)
        masks = behaviour_masks(ordered, frame)
        weights = (1 << np.arange(len(ordered), dtype=np.int64))[:, None]
        patterns = (masks * weights).sum(axis=0) if ordered else np.zeros(len(frame), np.int64)
        unique, inverse = np.unique(patterns, return_inverse=True)
        held = [
            [b.id for bit, b in enumerate(ordered) if int(pattern) >> bit & 1] for pattern in unique
        ]
        lookup = cls.__new__(cls)
        lookup._codes = inverse.reshape(-1).astype(np.int64)
        lookup._uniques = np.array([SEPARATOR.join(ids) for ids in held] or [""], dtype=object)
        lookup._held = [set(ids) for ids in held]
        return lookup

    def tags(self) -> np.ndarray:
        """Each learner's tags as the column holds them (object array; null stays null)."""
        with_null = np.append(self._uniques, None)  # code -1 (null) reads the trailing None
        return with_null[self._codes]

    def holds(self, behaviour_id: str) -> np.ndarray:
        """A boolean per learner; null or "" holds nothing."""
        table = np.array([behaviour_id in held for held in self._held] + [False])
        return table[self._codes]  # code -1 (null) reads the trailing False


__all__ = [
    "BEHAVIOURS_FILE",
    "Behaviour",
    "BehaviourLookup",
    "behaviour_features",
    "behaviour_masks",
    "behaviour_tags",
    "holds",
    "load_behaviours",
]
