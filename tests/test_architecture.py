"""Imports flow one way (DESIGN §2): features <- models <- training; rules imports none of them;
serving never imports training except serving/cli.py, the composition root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "training", "rules", "serving")
FORBIDDEN: dict[str, set[str]] = {
    "features": {"models", "training", "rules", "serving"},
    "models": {"training", "rules", "serving"},
    "training": {"rules", "serving"},
    "rules": {"features", "models", "training", "serving"},
    "serving": {"training"},
}
COMPOSITION_ROOT = REPO / "serving" / "cli.py"


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages a module imports, anywhere in it (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_flow_one_way(package):
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
        if path != COMPOSITION_ROOT
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_composition_root_is_the_one_place_that_knows_training():
    assert "training" in imported_packages(COMPOSITION_ROOT)
