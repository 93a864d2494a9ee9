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
    # the one assembly path and the run-directory reader sit below train, eval and export
    "assembly.py": ("deepspec_core.train", "deepspec_core.eval", "deepspec_core.cache"),
    "runs.py": ("deepspec_core.train", "deepspec_core.eval", "deepspec_core.drafts", "deepspec_core.cache"),
    # what algorithm files build their specs on loads no torch and knows no algorithm
    "specbase.py": ("torch", "deepspec_core.drafts", "deepspec_core.train", "deepspec_core.eval",
                    "deepspec_core.cache", "deepspec_core.spec"),
    "export": ("deepspec_core.train", "deepspec_core.eval", "deepspec_core.cache"),
    "presets.py": ("deepspec_core.spec", "deepspec_core.train", "deepspec_core.eval", "deepspec_core.cache"),
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


def _module(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module → the deepspec_core modules it imports anywhere (relative imports resolved)."""
    mods = {_module(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            deps.update(f for f in found if f in mods and f != name)
        graph[name] = deps
    return graph


def test_no_import_cycles_even_through_imports_inside_functions():
    graph = _graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                cycles.append(" → ".join(path[path.index(dep):] + [dep]))
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []


def test_the_cycle_check_sees_a_cycle(tmp_path):
    """The graph resolves relative imports: a package whose base module imports its own algorithms
    (the shape of the cycle once between drafts/base.py and the algorithm files) is seen."""
    pkg = tmp_path / "deepspec_core" / "drafts"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import algo\n")
    (pkg / "base.py").write_text("def build():\n    from . import algo\n")
    (pkg / "algo.py").write_text("from .base import build\n")
    globals()["CORE"], saved = tmp_path / "deepspec_core", CORE
    try:
        graph = _graph()
    finally:
        globals()["CORE"] = saved
    assert "deepspec_core.drafts.algo" in graph["deepspec_core.drafts.base"]
    assert "deepspec_core.drafts.base" in graph["deepspec_core.drafts.algo"]
