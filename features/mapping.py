"""Mapping a foreign event log onto the events contract (DESIGN §3).

A mapping is a small YAML file::

    columns:            # optional renames: foreign name -> contract name
      user_id: customer_id
      timestamp: ts
    event_types:        # foreign type -> canonical type (or "other")
      login: session
      lesson_done: lesson_completed
    ignore_columns:     # optional: foreign columns that are not part of the contract
      - ip_address

Canonical event types need no entry: they map onto themselves. Any other type is *unmapped*; the
loader reports unmapped types as an error, or turns them into ``other`` (with a note) when unknown
types are allowed. ``ignore_columns`` is how a foreign log with extra columns is accepted: the
columns named there are left out explicitly (the loader notes it), never silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from features.schemas import EVENT_COLUMNS
from features.vocabulary import CANONICAL_EVENT_TYPES, OTHER_EVENT_TYPE

MAPPING_TARGET_TYPES: tuple[str, ...] = (*CANONICAL_EVENT_TYPES, OTHER_EVENT_TYPE)
"""What a foreign event type may be mapped onto."""

# Literal types built from the runtime tuples, so pydantic names the exact key of a bad target.
ContractColumn = Literal[EVENT_COLUMNS]  # type: ignore[valid-type]
TargetEventType = Literal[MAPPING_TARGET_TYPES]  # type: ignore[valid-type]


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and the key."""


class EventMapping(BaseModel):
    """Renames of foreign columns and translations of foreign event types onto the contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: dict[str, ContractColumn] = {}
    event_types: dict[str, TargetEventType] = {}
    ignore_columns: tuple[str, ...] = ()

    @field_validator("columns")
    @classmethod
    def _one_source_per_target(cls, columns: dict[str, str]) -> dict[str, str]:
        targets = list(columns.values())
        repeated = sorted({t for t in targets if targets.count(t) > 1})
        if repeated:
            sources = {t: sorted(f for f, g in columns.items() if g == t) for t in repeated}
            raise ValueError(f"several columns are renamed to the same contract column: {sources}")
        return columns

    @model_validator(mode="after")
    def _ignored_columns_are_not_renamed(self) -> EventMapping:
        both = sorted(set(self.ignore_columns) & set(self.columns))
        if both:
            raise ValueError(f"columns both renamed and ignored: {both}")
        return self

    def translate(self, event_type: str) -> str | None:
        """The canonical type of one foreign type, or None when the mapping does not cover it."""
        if event_type in self.event_types:
            return self.event_types[event_type]
        return event_type if event_type in CANONICAL_EVENT_TYPES else None

    def renames_for(self, columns: Iterable[str]) -> dict[str, str]:
        """The renames that apply to a frame with these ``columns``."""
        present = set(columns)
        return {foreign: target for foreign, target in self.columns.items() if foreign in present}

    def rename_conflicts(self, columns: Iterable[str]) -> dict[str, str]:
        """Renames whose target already exists as another column (foreign name -> target)."""
        present = set(columns)
        return {
            foreign: target
            for foreign, target in self.renames_for(present).items()
            if target in present and target != foreign
        }


@dataclass(frozen=True)
class MappedEventTypes:
    """The result of translating an event_type column.

    Attributes:
        values: the translated column (same index); unmapped types keep their foreign value unless
            they were turned into ``other``.
        unmapped: foreign types the mapping does not cover, with their row counts, most
            frequent first.
        became_other: whether the unmapped types were turned into ``other``.
    """

    values: pd.Series
    unmapped: dict[str, int]
    became_other: bool

    @property
    def unmapped_rows(self) -> int:
        """Rows whose type the mapping does not cover."""
        return sum(self.unmapped.values())


def map_event_types(
    event_types: pd.Series, mapping: EventMapping | None = None, *, allow_unknown: bool = False
) -> MappedEventTypes:
    """Translate a column of event types with ``mapping`` (identity for canonical types).

    Works on the distinct values only (factorised), so it is cheap on 10M+ rows. Nulls stay null.

    Args:
        event_types: the foreign event_type column (text).
        mapping: the mapping to apply; None means canonical types only.
        allow_unknown: turn types the mapping does not cover into ``other`` instead of keeping them.

    Returns:
        The translated column and the unmapped types with their counts.
    """
    mapping = mapping or EventMapping()
    codes, distinct = pd.factorize(event_types)
    translated = [mapping.translate(value) for value in distinct]
    counts = np.bincount(codes[codes >= 0], minlength=len(distinct))
    unmapped = {
        str(value): int(count)
        for value, target, count in zip(distinct, translated, counts, strict=True)
        if target is None
    }
    ordered = dict(sorted(unmapped.items(), key=lambda item: (-item[1], item[0])))
    unchanged = all(t == v for t, v in zip(translated, distinct, strict=True))
    if unchanged and pd.api.types.is_string_dtype(event_types.dtype):
        return MappedEventTypes(event_types, {}, became_other=False)  # the common, canonical case
    fallback = OTHER_EVENT_TYPE if allow_unknown else None
    targets = np.array(
        [t if t is not None else (fallback or v) for t, v in zip(translated, distinct, strict=True)]
        + [None],  # codes == -1 (null) index the trailing None
        dtype=object,
    )
    values = pd.Series(targets[codes], index=event_types.index, name=event_types.name, dtype="str")
    return MappedEventTypes(values, ordered, became_other=allow_unknown and bool(unmapped))


def load_mapping(path: str | Path) -> EventMapping:
    """Read and validate a mapping YAML file.

    Raises:
        MappingError: the file is missing, is not YAML, is not a mapping, has an unknown key, or
            maps onto an unknown contract column or event type; the message names the file and
            the key.
    """
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MappingError(f"{path}: cannot read the mapping file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise MappingError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(loaded, dict):
        found = "an empty file" if loaded is None else f"a {type(loaded).__name__}"
        raise MappingError(
            f"{path.name}: expected a mapping with keys 'columns' and/or 'event_types', "
            f"found {found}"
        )
    try:
        return EventMapping.model_validate(loaded)
    except ValidationError as error:
        raise MappingError(_describe_validation_error(path.name, error)) from error


def _describe_validation_error(file_name: str, error: ValidationError) -> str:
    """One line per pydantic error: ``file: key a.b: message`` (without pydantic's prefixes)."""
    lines = []
    for detail in error.errors():
        key = ".".join(str(part) for part in detail["loc"]) or "(top level)"
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "unknown key (expected columns, event_types, ignore_columns)"
        elif detail["type"] == "literal_error":
            what = "contract column" if detail["loc"][0] == "columns" else "canonical event type"
            message = f"{detail['input']!r} is not a {what} (expected {detail['ctx']['expected']})"
        lines.append(f"{file_name}: key {key}: {message}")
    return "\n".join(lines)


__all__ = [
    "MAPPING_TARGET_TYPES",
    "EventMapping",
    "MappedEventTypes",
    "MappingError",
    "load_mapping",
    "map_event_types",
]
