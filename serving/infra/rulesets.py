"""The rules a process decides with: the packaged ones, or a directory's, checked at load."""

from __future__ import annotations

from pathlib import Path

from features.catalog import load_catalog
from rules import MODEL_SCORE_COLUMNS, RuleSet, load_ruleset


def load_rules(rules_dir: Path | None = None) -> RuleSet:
    """The validated rules, checked against the catalog's feature names and the model scores.

    Raises:
        rules.RulesError: naming the file, rule id and field of the first problem.
    """
    return load_ruleset(rules_dir, known_features=[*load_catalog().names, *MODEL_SCORE_COLUMNS])


__all__ = ["load_rules"]
