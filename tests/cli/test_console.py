"""The CLI's consoles: outside a terminal, tables keep their columns and printed paths stay on one line."""

from __future__ import annotations

import io

import pytest
from rich.table import Table

from deepspec_cli.console import NON_TERMINAL_WIDTH, make_console

pytestmark = pytest.mark.unit


def test_outside_a_terminal_tables_and_paths_are_not_cut(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()
    assert console.width == NON_TERMINAL_WIDTH
    console.file = io.StringIO()
    path = "/a/very/long/directory/" + "x" * 150 + "/results.json"
    console.print(f"wrote {path} (+ 4 more files)")
    table = Table()
    for name in ["benchmark", "samples", "rounds", "drafted/round", "τ", "τ 95% CI", "target tok/s", "spec tok/s",
                 "round cost", "speedup"]:
        table.add_column(name)
    table.add_row("humaneval", "20", "1000", "5.00", "1.23", "1.10–1.35", "16.0", "14.1", "1.34", "0.88×")
    console.print(table)
    out = console.file.getvalue()
    assert f"wrote {path} (+ 4 more files)\n" in out
    assert "humaneval" in out and "round cost" in out and "…" not in out


def test_columns_decides_where_it_is_set(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100
