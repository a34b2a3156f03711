"""The package layout holds together: every internal import names something that exists.

Imports inside functions (kept lazy so the CLI starts without TensorFlow) are not run by any
import-time check, and a name moved between modules only fails when that function runs. This
test reads every ``from cifake_mlflow... import name`` statically and resolves it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cifake_mlflow"
MAX_MODULE_LINES = 400


def module_file(dotted: str) -> Path | None:
    """The source file of a ``cifake_mlflow...`` module, or None when there is none."""
    parts = dotted.split(".")
    base = ROOT.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def top_level_names(path: Path) -> set[str]:
    """Names a module binds at its top level: defs, classes, assignments and imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def internal_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for every ``from cifake_mlflow... import name`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cifake_mlflow"):
            found.extend((node.lineno, node.module, alias.name) for alias in node.names)
    return found


SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_internal_import_resolves(path: Path) -> None:
    broken = []
    for line, module, name in internal_imports(path):
        target = module_file(module)
        if target is None:
            broken.append(f"line {line}: no module {module}")
        elif module_file(f"{module}.{name}") is None and name not in top_level_names(target):
            broken.append(f"line {line}: {module} has no {name}")
    assert not broken, broken


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES}
