"""Fixtures for the rules tests: the real feature names, the packaged rules and editable copies."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from features.catalog import load_catalog
from rules.config import MODEL_SCORE_COLUMNS, RuleSet, load_ruleset

RULE_FILES = ("tags.yaml", "transitions.yaml", "interventions.yaml")


@pytest.fixture(scope="session")
def known_features() -> list[str]:
    """What the caller passes: the catalog's names plus the score columns."""
    return [*load_catalog().names, *sorted(MODEL_SCORE_COLUMNS)]


@pytest.fixture(scope="session")
def ruleset(known_features) -> RuleSet:
    """The packaged rules."""
    return load_ruleset(known_features=known_features)


@pytest.fixture
def rules_copy(tmp_path) -> Path:
    """A writable copy of the packaged rules directory."""
    target = tmp_path / "rules"
    target.mkdir()
    for name in RULE_FILES:
        with resources.as_file(resources.files("rules").joinpath(name)) as source:
            shutil.copy(source, target / name)
    return target
