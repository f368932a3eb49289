"""The one-way data flow of ../shared/STYLE.md, held: specs -> frameworks -> cost -> calibration -> laws -> search ->
report / emit / CLI. A module may import what comes before it, never what comes after (function-local imports
included: they hide a cycle rather than remove it). Before this test specs/doctor.py imported calibrate and profile
(it runs the cost model on runs files; it now lives in calibrate/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import planner

PACKAGE = Path(planner.__file__).parent
LATER = {
    "specs": {"cost", "calibrate", "laws", "search", "emit", "report", "cli", "profile"},
    "frameworks": {"cost", "calibrate", "laws", "search", "emit", "report", "cli", "profile"},
    "cost": {"calibrate", "laws", "search", "emit", "report", "cli", "profile"},
    "calibrate": {"laws", "search", "emit", "report", "cli"},
    "laws": {"search", "emit", "report", "cli"},
    "search": {"report", "cli"},
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)


@pytest.mark.parametrize("package", sorted(LATER))
def test_a_package_imports_nothing_that_comes_after_it(package):
    backwards = [f"{path.relative_to(PACKAGE)}:{line} imports {name}"
                 for path in sorted((PACKAGE / package).rglob("*.py"))
                 for line, name in _imports(path)
                 if name.startswith("planner.") and name.split(".")[1] in LATER[package]]
    assert backwards == []
