"""`deepspec export`: a trained draft as a directory vLLM or SGLang serves unchanged."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors

console = make_console(highlight=False)


@handle_errors
def export_command(
    checkpoint: Path = typer.Argument(..., help="A run directory (its latest checkpoint) or a step_<N> directory."),
    fmt: str = typer.Option("vllm", "--format", help="vllm (the speculators format) or sglang."),
    out: Path = typer.Option(..., "--out", help="Directory to write config.json and model.safetensors into."),
    k: int | None = typer.Option(None, "--k", help="Tokens drafted per round at serving time (default: the draft's own)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous export in --out (nothing else is ever deleted)."),
) -> None:
    """Export a trained draft for a serving engine; the export is checked tensor by tensor before it is kept."""
    from deepspec_core.export import export_draft

    ex = export_draft(checkpoint, fmt, out, k=k, overwrite=overwrite)
    console.print(f"exported {ex.algo} draft → {escape(str(ex.out_dir))} ({ex.fmt}: {ex.served_as}, "
                  f"k = {ex.k}, {len(ex.tensors)} tensors, checked against the engine's layout)", soft_wrap=True)
    for note in ex.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    console.print("serve it with:")
    for cmd in ex.launch:
        console.print(f"  {escape(cmd)}", soft_wrap=True)  # a command must paste as one line
