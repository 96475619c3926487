"""The rules package stays independent: it imports none of the other lstep packages."""

from __future__ import annotations

import ast
from importlib import resources

FORBIDDEN = {"features", "models", "training", "serving"}


def test_rules_modules_import_no_other_lstep_package():
    # given every module of the rules package
    package = resources.files("rules")
    imported: dict[str, set[str]] = {}
    for module in package.iterdir():
        if not module.name.endswith(".py"):
            continue
        tree = ast.parse(module.read_text(encoding="utf-8"))
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        names |= {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        imported[module.name] = {name.split(".")[0] for name in names}
    # then none of them reaches into features, models, training or serving
    assert "engine.py" in imported
    offending = {
        name: sorted(roots & FORBIDDEN) for name, roots in imported.items() if roots & FORBIDDEN
    }
    assert offending == {}
