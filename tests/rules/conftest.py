"""Fixtures for the rules tests: the real feature names, the packaged rules and editable copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.catalog import load_catalog
from rules.config import MODEL_SCORE_COLUMNS, RuleSet
from rules.loading import load_ruleset
from tests.rules.casebook import copy_packaged_rules, with_casebook_points


@pytest.fixture(scope="session")
def known_features() -> list[str]:
    """What the caller passes: the catalog's names plus the score columns."""
    return [*load_catalog().names, *sorted(MODEL_SCORE_COLUMNS)]


@pytest.fixture(scope="session")
def ruleset(known_features) -> RuleSet:
    """The packaged rules."""
    return with_casebook_points(load_ruleset(known_features=known_features))


@pytest.fixture
def rules_copy(tmp_path) -> Path:
    """A writable copy of the packaged rules directory."""
    return copy_packaged_rules(tmp_path / "rules")
