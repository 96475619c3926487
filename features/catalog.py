"""The feature catalog: names, plain-words descriptions, units and the event types each needs.

The catalog (``catalog.yaml`` beside this module) is the single list of feature columns. It drives
the feature-frame schema, the generated docs and, later, the reason codes a CS lead reads.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.vocabulary import CANONICAL_EVENT_TYPES

FeatureDtype = Literal["float", "int", "bool", "category"]
FeatureGroup = Literal[
    "recency",
    "frequency",
    "shape",
    "intensity",
    "rhythm",
    "time",
    "trend",
    "progress",
    "community",
    "breadth",
    "channel",
    "video",
    "tenure",
    "account",
    "risk",
]


class FeatureSpec(BaseModel):
    """One feature column, as documented in the catalog."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    description: str
    unit: str
    dtype: FeatureDtype
    group: FeatureGroup
    needs: tuple[str, ...] = ()
    needs_duration: bool = False
    phrase: str | None = None
    evidence: str | None = None

    @model_validator(mode="after")
    def _needs_are_canonical(self) -> FeatureSpec:
        unknown = sorted(set(self.needs) - set(CANONICAL_EVENT_TYPES))
        if unknown:
            raise ValueError(f"feature {self.name!r} needs unknown event types {unknown}")
        return self

    @model_validator(mode="after")
    def _phrase_formats_a_value(self) -> FeatureSpec:
        # A phrase is formatted in the nightly batch; a typo must fail when the catalog loads.
        if self.phrase is not None:
            try:
                self.phrase.format(value=1.5)
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"feature {self.name!r}: phrase {self.phrase!r} does not format a value "
                    f"({error!r}); write {{value}} with an optional format spec"
                ) from None
        if self.evidence is not None and self.dtype != "bool":
            raise ValueError(f"feature {self.name!r}: only a risk flag quotes evidence")
        return self


class FeatureCatalog(BaseModel):
    """The ordered list of feature specs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[FeatureSpec, ...]

    @model_validator(mode="after")
    def _names_unique(self) -> FeatureCatalog:
        names = [f.name for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"feature catalog lists these names twice: {duplicated}")
        unknown = sorted(
            f"{f.name} -> {f.evidence}" for f in self.features if f.evidence not in (None, *names)
        )
        if unknown:
            raise ValueError(f"feature catalog: evidence names unknown features: {unknown}")
        return self

    @property
    def names(self) -> list[str]:
        """Feature column names in catalog order."""
        return [f.name for f in self.features]

    @property
    def risk_indicators(self) -> list[str]:
        """The 12 boolean risk-indicator columns (``risk_*`` flags, not the count)."""
        return [f.name for f in self.features if f.group == "risk" and f.dtype == "bool"]

    def get(self, name: str) -> FeatureSpec:
        """Return the spec of ``name``.

        Raises:
            KeyError: with the list of known names when ``name`` is not in the catalog.
        """
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(f"unknown feature {name!r}; the catalog has: {', '.join(self.names)}")


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def load_catalog() -> FeatureCatalog:
    """Load and validate the packaged feature catalog (cached; the file is read once)."""
    text = resources.files("features").joinpath("catalog.yaml").read_text(encoding="utf-8")
    # libyaml's safe loader when PyYAML has it: the pure-Python one spent ~0.2 s of every
    # command that loads the rules (`lstep explain`, a computed `lstep kpis`) on this file.
    return FeatureCatalog.model_validate(yaml.load(text, Loader=_SAFE_LOADER))


def catalog_markdown(catalog: FeatureCatalog | None = None) -> str:
    """Render the catalog as a markdown table (the content of docs/features.md)."""
    catalog = catalog or load_catalog()
    lines = [
        "# Feature catalog",
        "",
        "Generated from `features/catalog.yaml` by `lstep catalog --markdown > docs/features.md`.",
        "Windows: the 30 days [as_of - 30d, as_of); only events with ts < as_of are used.",
        "",
        "| name | group | unit | needs | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in catalog.features:
        needs = ", ".join(spec.needs) or "any event"
        if spec.needs_duration:
            needs += " (+ duration_s)"
        lines.append(
            f"| `{spec.name}` | {spec.group} | {spec.unit} | {needs} | {spec.description} |"
        )
    return "\n".join(lines) + "\n"
