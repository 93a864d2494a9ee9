"""`deepspec compare`: drafts side by side, like for like."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_core.compare import Comparison, compare, rows

console = make_console()


def render(c: Comparison) -> Table:
    names = [e.name for e in c.entries]
    p = c.entries[0].result.protocol
    table = Table(
        title=f"τ (bonus token included) — target {Path(p.target).name or p.target}, T={p.temperature}, "
        f"k={p.num_draft_tokens}, thinking {'on' if p.thinking else 'off'}; gain vs {c.baseline}",
        caption=c.replica_note() or None,
    )
    table.add_column("benchmark")
    for n in names:
        table.add_column(n, justify="right")
    for row in rows(c):
        if row in (f"{next(iter(c.domains), '')} mean", "macro"):
            table.add_section()  # benchmarks | domain means | macro
        cells = []
        for n in names:
            g = c.gain(row, n) if n != c.baseline else None
            cells.append(c.tau_text(row, n) + (f" [dim]({g:+.1%})[/]" if g is not None else ""))
        table.add_row(row, *cells, style="bold" if row == "macro" else None)
    if "macro" in c.speedup:
        table.add_section()
        table.add_row("speedup (macro)", *[f"{c.speedup['macro'][n]:.2f}×" if n in c.speedup["macro"] else "–" for n in names])
    return table


@handle_errors
def compare_command(
    results: list[str] = typer.Argument(
        ...,
        help="results.json files, eval directories or run directories; join several with commas to give one "
        "draft's replicas (e.g. seeds): its τ is then their mean ± sd.",
    ),
    baseline: str | None = typer.Option(None, "--baseline", help="Draft the gains are relative to (default: the first)."),
    out: Path | None = typer.Option(None, "--out", help="Write report.md, summary.json and PNG plots here."),
    allow_protocol_mismatch: bool = typer.Option(
        False, "--allow-protocol-mismatch", help="Compare results measured under different protocols anyway."
    ),
) -> None:
    """Compare drafts: τ per benchmark, domain means and macro, gains over a baseline, speedups."""
    c, written = compare([r.split(",") if "," in r else r for r in results], out, baseline, allow_protocol_mismatch)
    console.print(render(c))
    for d in c.mismatches:
        console.print(f"[yellow]protocol differs:[/] {d}")
    for path in written:
        console.print(f"wrote {path}")
