"""The wheel ships every subpackage: `pip install .` (the README's first command) is not editable, so a
package missing from pyproject's explicit list imports in the test suite (editable) and fails for users."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is in the standard library from 3.11")
def test_every_subpackage_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "planner").rglob("__init__.py")
    }
    missing = on_disk - listed
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}"
