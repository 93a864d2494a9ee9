"""`deepspec target`: build and manage targets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_cli.progress import progress_for
from deepspec_core.targets import tiny

app = typer.Typer(help="Build and manage target models.", no_args_is_help=True)
console = make_console()


@app.command("tiny")
@handle_errors
def tiny_cmd(
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Build into this directory. Without it, build (once) into the cache and print its path.",
    ),
    size: str = typer.Option(
        "default", "--size", help="quick (seconds, for tests) or default (~4 min on 2 cores)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the build; the same seed gives the same weights."),
) -> None:
    """Build the embedded tiny target (small Qwen3 + tokenizer) from the Python stdlib source."""
    # stderr: the path printed without --out is this command's output, for $(deepspec target tiny)
    with progress_for(make_console(stderr=True)) as progress:
        if out is None:
            path = tiny.ensure_tiny_target(size=size, seed=seed, progress=progress)
        else:
            path = tiny.build_tiny_target(out, size=size, seed=seed, progress=progress)
    if out is None:
        typer.echo(str(path))
        return
    console.print(_summary(tiny.read_info(path)))
    console.print(f"[green]built[/] {path}")


def _summary(info: dict) -> Table:
    table = Table(title=f"{info['name']} (seed {info['build']['seed']})", show_header=False)
    r = info["build"]["recipe"]
    ppl = info["heldout_perplexity"]
    rows = [
        ("parameters", f"{info['num_parameters']:,}"),
        ("vocab", f"{info['vocab_size']:,}"),
        (
            "shape",
            f"d={r['hidden_size']} layers={r['num_layers']} heads={r['num_heads']}/{r['num_kv_heads']}",
        ),
        ("train tokens", f"{info['train_tokens']:,}"),
        ("held-out perplexity (chat answers)", f"{ppl['chat_assistant']:.1f}"),
        ("held-out perplexity (code)", f"{ppl['code']:.1f}"),
        ("build seconds", f"{info['seconds']['total']:.1f}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


@app.command("import")
@handle_errors
def import_cmd(
    source: Path = typer.Argument(..., help="A .gguf file, a directory holding GGUF files, or an HF model directory."),
    out: Path = typer.Option(..., "--out", help="New directory for the standard HF checkpoint."),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="Which .gguf of a directory holding several."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Weights dtype written: bfloat16 or float32."),
) -> None:
    """Import a GGUF (dequantised) or HF model as a standard HF directory every deepspec stage accepts."""
    from deepspec_core.targets.importer import import_target

    with console.status(f"importing {source} …"):
        res = import_target(source, out, gguf_file=gguf_file, dtype=dtype)
    table = Table(title=f"imported {res.out_dir}", show_header=False)
    for k, v in [
        ("architecture", res.architecture),
        ("parameters", f"{res.num_parameters:,}"),
        ("layers / hidden", f"{res.num_layers} / {res.hidden_size}"),
        ("vocab", f"{res.vocab_size:,}"),
        ("source tensor types", ", ".join(res.quantization) or "(HF directory)"),
        ("chat template", "yes" if res.has_chat_template else "no — pass target.chat_template"),
        ("seconds", f"{res.seconds:.1f}"),
    ]:
        table.add_row(k, v)
    console.print(table)
