"""Every bundled blueprint is documented in the library page and run against the lab by a
test; a new blueprint without either fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from opsgate.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted(load_catalog(ROOT / "blueprints", ROOT / "policies").blueprints)
LIBRARY_PAGE = ROOT / "docs" / "blueprint-library.md"
LAB_TESTS = [
    *sorted((ROOT / "tests" / "library").glob("test_*.py")),
    ROOT / "tests/lab/test_lab.py",
]


def test_every_bundled_blueprint_has_one_entry_in_the_library_page() -> None:
    headings = re.findall(r"^## `?(\w+)`?$", LIBRARY_PAGE.read_text(), re.MULTILINE)
    assert sorted(headings) == BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_blueprint_is_run_against_the_lab(name: str) -> None:
    """By ``library.run("name", ...)`` or ``opsgate run name`` in a lab test."""
    started = re.compile(rf'(\.run\(\s*|"run",\s*)"{name}"')
    assert any(started.search(path.read_text()) for path in LAB_TESTS), (
        f"no test in tests/library runs {name} against the lab"
    )
