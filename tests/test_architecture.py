"""The house's shape, enforced: imports flow one way, serving's layers are folders, rooms are small.

DESIGN §2: features <- models <- training; rules imports none of them; serving never imports
training except the CLI (``serving/cli/``), the composition root. Inside serving the layers are
folders: ``core`` (pure logic) imports no I/O library and no other layer; ``infra`` and ``app``
import neither ``api`` nor ``cli``; ``api`` does not import ``cli``.
"""

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
COMPOSITION_ROOT = REPO / "serving" / "cli"
LAYERS = ("core", "infra", "app", "api", "cli")
LAYER_FORBIDDEN: dict[str, set[str]] = {
    "core": {"serving.infra", "serving.app", "serving.api", "serving.cli", "serving.settings"},
    "infra": {"serving.app", "serving.api", "serving.cli"},
    "app": {"serving.api", "serving.cli"},
    "api": {"serving.cli"},
}
IO_LIBRARIES = {
    "aiohttp", "alembic", "anyio", "bentoml", "duckdb", "fastapi", "httpx", "jinja2",
    "matplotlib", "mlflow", "os", "pathlib", "psycopg", "rich", "shutil", "sqlalchemy",
    "starlette", "subprocess", "typer", "urllib",
}  # fmt: skip
"""What pure logic never imports: files, databases, the network, processes, terminals."""
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8
GENERATED = REPO / "serving" / "infra" / "migrations"
"""Alembic revisions: frozen copies of the tables, not code that is edited."""


def modules_imported(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (lazy imports included), dotted in full."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages a module imports."""
    return {name.split(".")[0] for name in modules_imported(path)} & set(PACKAGES)


def serving_files(layer: str | None = None) -> list[Path]:
    root = REPO / "serving" if layer is None else REPO / "serving" / layer
    return sorted(path for path in root.rglob("*.py") if GENERATED not in path.parents)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_flow_one_way(package):
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
        if COMPOSITION_ROOT not in path.parents
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_composition_root_is_the_one_place_that_knows_training():
    users = {
        path.name for path in COMPOSITION_ROOT.glob("*.py") if "training" in imported_packages(path)
    }
    assert users == {"demo.py", "model.py"}


def test_serving_layers_are_folders_and_nothing_else_holds_code():
    top = {path.name for path in (REPO / "serving").iterdir() if not path.name.startswith("__")}
    assert top == {*LAYERS, "settings.py"}


@pytest.mark.parametrize("layer", sorted(LAYER_FORBIDDEN))
def test_layers_import_only_layers_below_them(layer):
    offenders = {}
    for path in serving_files(layer):
        bad = {
            name
            for name in modules_imported(path)
            if any(name == gone or name.startswith(f"{gone}.") for gone in LAYER_FORBIDDEN[layer])
        }
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_core_imports_no_io_library():
    offenders = {
        str(path.relative_to(REPO)): sorted(
            name for name in modules_imported(path) if name.split(".")[0] in IO_LIBRARIES
        )
        for path in serving_files("core")
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_no_file_in_serving_is_over_500_lines():
    long = {
        str(path.relative_to(REPO)): lines
        for path in serving_files()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


@pytest.mark.parametrize("package", ["features", "models", "rules", "training"])
def test_no_file_in_the_feature_model_rules_and_training_packages_is_over_500_lines(package):
    long = {
        str(path.relative_to(REPO)): lines
        for path in sorted((REPO / package).rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return [node for node in ast.walk(tree) if isinstance(node, kinds)]


def is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A Typer command: its parameters are the command line's options, declared one by one."""
    return any(getattr(d, "id", None) == "friendly_errors" for d in node.decorator_list)


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    arguments = node.args
    names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
    return len([name for name in names if name not in ("self", "cls")])


def test_no_function_in_serving_is_over_60_lines_or_8_parameters():
    offenders = []
    for path in serving_files():
        for node in functions(path):
            length = node.end_lineno - node.lineno + 1
            too_many = parameters(node) > MAX_PARAMETERS and not is_command(node)
            if length > MAX_FUNCTION_LINES or too_many:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert offenders == []


def test_no_import_waits_behind_a_statement():
    waiting = [
        str(path.relative_to(REPO))
        for path in serving_files()
        if "noqa: E402" in path.read_text(encoding="utf-8")
    ]
    assert waiting == []
