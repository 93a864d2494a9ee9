"""`deepspec demo`: the embedded main job, tiny target to compare table, in one command."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from deepspec_cli.compare_cmd import render
from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_cli.progress import progress_for
from deepspec_core.demo import BUDGETS, run_demo

console = make_console()


@handle_errors
def demo_command(
    out: Path = typer.Option(Path("deepspec-demo"), "--out", help="Directory for the demo's data, cache, runs and report."),
    budget: str = typer.Option("small", "--budget", help=f"Work per stage: {' | '.join(BUDGETS)} (smoke: minutes; small: the default)."),
    seeds: int | None = typer.Option(
        None, "--seeds", help="Training seeds per algorithm (default: the budget's); τ is then shown as mean ± sd."
    ),
) -> None:
    """Run the whole pipeline on the embedded tiny target: regen → cache → train the three drafts → eval → compare.

    Rerunning reuses finished stages and resumes interrupted ones.
    """
    t0 = time.perf_counter()
    with progress_for(console) as progress:
        res = run_demo(
            out,
            budget,
            seeds,
            progress=progress,
            stage=lambda name: console.rule(f"[bold]{name}"),
            say=lambda line: console.print(f"  {line}"),
        )
    console.rule("[bold]result")
    assert res.comparison is not None and res.compare_dir is not None  # run_demo's last stage sets both
    console.print(render(res.comparison))
    console.print(f"report: {res.compare_dir / 'report.md'}")
    console.print(f"plots:  {', '.join(str(p) for p in sorted(res.compare_dir.glob('*.png')))}")  # speedup too
    for name, seconds in res.stage_seconds.items():
        console.print(f"  [dim]{seconds:7.1f} s  {name}[/]")
    console.print(f"done in {time.perf_counter() - t0:.0f} s; rerun to reuse finished stages")
