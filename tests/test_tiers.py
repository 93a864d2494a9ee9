"""Every test module declares exactly one tier (unit, integration or e2e; pyproject.toml), so that
`pytest -m unit` is the whole fast tier and nothing falls outside all three. tests/conftest.py
refuses such a module at collection too; this test also names modules a run did not collect."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")


def declared_tiers(path: Path) -> list[str]:
    """The tiers a module-level ``pytestmark = pytest.mark.<tier>`` (or a list of marks) names."""
    tiers = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            marks = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            tiers += [m.attr for m in marks if isinstance(m, ast.Attribute) and m.attr in TIERS]
    return tiers


def test_every_test_module_has_exactly_one_tier():
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 40  # the glob found the suite
    bad = {str(p.relative_to(TESTS)): declared_tiers(p) for p in modules if len(declared_tiers(p)) != 1}
    assert bad == {}


def test_the_tiers_are_registered_markers(pytestconfig):
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= registered and "slow" in registered


def test_the_check_sees_a_missing_and_a_double_tier(tmp_path):
    none, two = tmp_path / "test_none.py", tmp_path / "test_two.py"
    none.write_text("import pytest\n\ndef test_x():\n    pass\n")
    two.write_text("import pytest\n\npytestmark = [pytest.mark.unit, pytest.mark.e2e]\n")
    assert declared_tiers(none) == [] and declared_tiers(two) == ["unit", "e2e"]
