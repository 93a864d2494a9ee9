"""The layering of docs/architecture.md, enforced on every import statement (module level and inside
functions): drafts never import train, eval or cache; cache knows no algorithm; eval does not
import train; nothing in core imports the CLI, nor rich (core reports progress through
deepspec_core.progress; drawing it is the CLI's)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CORE = Path(__file__).resolve().parents[1] / "src" / "deepspec_core"

RULES = {  # package of core → packages it must never import
    "drafts": ("deepspec_core.train", "deepspec_core.eval", "deepspec_core.cache"),
    "cache": ("deepspec_core.drafts", "deepspec_core.train", "deepspec_core.eval"),
    "eval": ("deepspec_core.train",),
    "decode": ("deepspec_core.train", "deepspec_core.eval", "deepspec_core.cache"),
    "data": ("deepspec_core.train", "deepspec_core.eval", "deepspec_core.drafts", "deepspec_core.cache"),
}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_layers_import_only_downwards():
    broken = []
    for path in CORE.rglob("*.py"):
        package = path.relative_to(CORE).parts[0]
        banned = (*RULES.get(package, ()), "deepspec_cli", "rich")
        broken += [f"{path.relative_to(CORE)} imports {m}" for m in imports_of(path)
                   if any(m == b or m.startswith(b + ".") for b in banned)]
    assert broken == []
