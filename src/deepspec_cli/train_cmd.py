"""`deepspec train`: train a draft from a spec, in-process or one process per GPU through accelerate."""

from __future__ import annotations

import subprocess
import sys

import typer
from rich.table import Table

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_core.spec import load_spec

console = make_console()

SET_HELP = "Override a field: --set train.lr=3e-4 (value parsed as TOML). Repeatable."


@handle_errors
def train(
    spec: str = typer.Argument(..., help="Preset name or TOML spec file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    gpus: int = typer.Option(1, "--gpus", help="Processes per node (one per GPU), launched with accelerate."),
    nodes: int = typer.Option(1, "--nodes", help="Machines taking part; run the same command on each."),
    node_rank: int = typer.Option(0, "--node-rank", help="This machine's index among --nodes (0 is the main one)."),
    main_addr: str = typer.Option(None, "--main-addr", help="Address of the node with --node-rank 0."),
    main_port: int = typer.Option(None, "--main-port", help="Rendezvous port on the main node (default 29500)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the existing run directory and start over."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the live progress bar."),
    allow_stale_cache: bool = typer.Option(
        False, "--allow-stale-cache", help="Train on a cache whose target weights or training files changed since it was built."
    ),
) -> None:
    """Train the draft of SPEC. Rerunning on an existing run resumes it; --fresh starts over.

    Runs in this process on one device, or — with --gpus/--nodes — as one process per GPU under
    `accelerate launch`. Also runs as-is under torchrun, accelerate or SLURM srun.
    """
    from deepspec_core.distributed import detect_env
    from deepspec_core.train.checkpoint import prepare_run_dir
    from deepspec_core.train.launch import launch_command

    if allow_stale_cache:
        set_ = [*set_, "cache.allow_stale=true"]
    resolved = load_spec(spec, set_)
    if (gpus > 1 or nodes > 1) and not detect_env().distributed:
        if not fresh:
            prepare_run_dir(resolved, write=False)  # a changed spec fails here, before any process starts
        args = ["train", spec, *(a for s in set_ for a in ("--set", s)), *(["--fresh"] if fresh else [])]
        args += [] if progress else ["--no-progress"]
        cmd = launch_command(args, gpus, nodes, node_rank, main_addr, main_port)
        console.print(f"launching {gpus * nodes} processes ({nodes} node(s)) with accelerate", highlight=False)
        sys.exit(subprocess.call(cmd))

    from deepspec_cli.progress import progress_for
    from deepspec_core.train.loop import Runtime
    from deepspec_core.train.loop import train as run_training

    with progress_for(console, bars=progress) as reporter:
        result = run_training(resolved, Runtime(fresh=fresh, progress=reporter, say=_say))
    if detect_env().is_main:
        _render(result)
    if result.stopped_by:  # stopped on request: the shell and schedulers must see it was not a finished run
        import signal

        sys.exit(128 + int(signal.Signals[result.stopped_by]))


def _say(message: str) -> None:
    console.print(message, markup=False, highlight=False)


def _render(result) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    status = "finished" if result.finished else (
        f"stopped by {result.stopped_by} (rerun to resume)" if result.stopped_by else "stopped (rerun to resume)")
    table.add_row("run", str(result.run_dir))
    table.add_row("steps", f"{result.steps}/{result.total_steps} — {status}")
    if result.checkpoint:
        table.add_row("checkpoint", str(result.checkpoint))
    if result.val:
        v = result.val
        table.add_row(f"val τ estimate (step {result.val_step})",
                      f"greedy {v.get('tau_greedy', float('nan')):.3f}  expected {v.get('tau_expected', float('nan')):.3f}")
        acc = v.get("accept_per_pos")
        if isinstance(acc, list):
            table.add_row("val acceptance", " ".join(f"{x:.2f}" for x in acc))
    if result.train_tokens_per_s > 0:  # a rerun of a finished run trains nothing: no rate to show
        table.add_row("throughput", f"{result.train_tokens_per_s:,.0f} tokens/s")
        table.add_row("time", f"{result.minutes:.1f} min")
    console.print(table)
