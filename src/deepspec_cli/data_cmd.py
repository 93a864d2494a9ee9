"""`deepspec data`: fetch prompts, regenerate answers with the target, show rendered samples."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_cli.progress import progress_for

app = typer.Typer(help="Prepare training data: fetch prompts, regenerate answers, inspect samples.", no_args_is_help=True)
console = make_console()
err_console = make_console(stderr=True)

# Commands of this group that live in other modules; each module defines `register(app)`.
EXTRA_COMMAND_MODULES: list[str] = ["deepspec_cli.cache_cmd"]


@app.command("fetch")
@handle_errors
def fetch(
    source: str = typer.Argument(..., help="Hub dataset id (e.g. mlabonne/open-perfectblend) or a local .jsonl/.json/.parquet."),
    out: Path = typer.Option(..., "--out", "-o", help="Conversations file to write (JSONL); the held-out split goes beside it."),
    subset: str = typer.Option(None, "--subset", help="Dataset configuration (hub sources)."),
    split: str = typer.Option("train", "--split", help="Dataset split (hub sources)."),
    test_size: float = typer.Option(0.05, "--test-size", help="Held-out share (< 1) or count (>= 1); 0 writes no held-out file."),
    limit: int = typer.Option(None, "--limit", help="Keep at most N conversations."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out draw."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out and its held-out file made by another fetch."),
) -> None:
    """Normalise a prompt source into conversations: bad rows dropped and counted, duplicates removed."""
    from deepspec_core.data.fetch import fetch as run_fetch

    with console.status(f"reading {source}"):
        r = run_fetch(source, out, subset=subset, split=split, test_size=test_size, limit=limit, seed=seed,
                      overwrite=overwrite)
    table = Table(title=f"data fetch · {source}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("rows in", f"{r.rows_in:,}")
    table.add_row("kept", f"{r.kept:,}")
    table.add_row("duplicates removed", f"{r.duplicates:,}")
    for reason, n in r.dropped.most_common():
        table.add_row(f"dropped: {reason}", f"[red]{n:,}[/]")
    table.add_row("user turns / conversation", f"{r.user_turns / max(r.kept, 1):.2f}")
    table.add_row("assistant turns (replaced by regen)", f"{r.assistant_turns:,}")
    table.add_row("with a system message", f"{r.with_system:,}")
    table.add_row("train", f"{r.train:,} → {r.out}")
    if r.heldout is not None:
        table.add_row("held-out", f"{r.heldout_count:,} → {r.heldout}")
    console.print(table)


@app.command("regen")
@handle_errors
def regen(
    in_path: Path = typer.Option(..., "--in", "-i", help="Conversations file whose answers are regenerated."),
    out: Path = typer.Option(..., "--out", "-o", help="Output conversations file (rerun the same command to resume)."),
    target: str = typer.Option(None, "--target", help="Target model: hub id, directory or 'tiny' (default: the spec's target.model)."),
    spec: str = typer.Option(None, "--spec", help="Preset or TOML spec whose data.regen section gives the defaults."),
    backend: str = typer.Option(None, "--backend", help="local (transformers in-process) or openai (HTTP servers)."),
    server: list[str] = typer.Option([], "--server", help="OpenAI-compatible server base URL; repeat for round-robin."),
    served_model: str = typer.Option(None, "--served-model", help="Model name to request (default: the first the server lists)."),
    concurrency: int = typer.Option(None, "--concurrency", help="Requests in flight (openai backend)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Conversations generated together (local backend)."),
    temperature: float = typer.Option(None, "--temperature"),
    top_p: float = typer.Option(None, "--top-p"),
    top_k: int = typer.Option(None, "--top-k", help="0 disables."),
    min_p: float = typer.Option(None, "--min-p", help="0 disables."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Maximum new tokens per assistant turn."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed (each answer: a seed from seed, conversation id, turn)."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds per HTTP request before it is retried."),
    max_retries: int = typer.Option(None, "--max-retries", help="Retries per request on timeouts, connection errors and 5xx."),
    thinking: bool = typer.Option(None, "--thinking/--no-thinking", help="Thinking mode (default: the spec's target.thinking, else off)."),
    limit: int = typer.Option(None, "--limit", help="Generate at most N new conversations (finished ones are kept)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing --out made from another input or sampling."),
    device: str = typer.Option("auto", "--device", help="Device of the local backend (auto, cpu, cuda, cuda:1...)."),
) -> None:
    """Regenerate every assistant turn with the target; resumable, output in input order."""
    from deepspec_core.data.regen import resolve_settings, run_regen

    settings = resolve_settings(
        spec, target, thinking, backend=backend, servers=server, served_model=served_model, concurrency=concurrency,
        batch_size=batch_size, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        max_tokens=max_tokens, seed=seed, request_timeout=timeout, max_retries=max_retries,
    )
    with progress_for(console) as progress:
        result = run_regen(in_path, out, settings, limit=limit, device=device, progress=progress, overwrite=overwrite,
                           warn=lambda line: err_console.print(f"[yellow]warning:[/] {line}"))
    table = Table(title=f"data regen · {settings.regen.backend} · {settings.target}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("conversations", f"{result.total:,}")
    table.add_row("already done", f"{result.already_done:,}")
    table.add_row("ok", f"[green]{result.ok:,}[/]")
    table.add_row("failed", f"[red]{result.failed:,}[/]" if result.failed else "0")
    table.add_row("truncated (max tokens)", f"[yellow]{result.truncated:,}[/]" if result.truncated else "0")
    table.add_row("tokens generated", f"{result.tokens:,}")
    table.add_row("tokens/s", f"{result.tokens_per_s:,.1f}")
    table.add_row("written", f"{result.written:,} → {result.out}")
    console.print(table)
    if result.failed:
        err_console.print(f"[yellow]warning:[/] {result.failed} conversations failed (see {result.errors}); "
                          "rerun the same command to retry them")


@app.command("prompts")
@handle_errors
def prompts(
    out: Path = typer.Option(..., "--out", "-o", help="Prompts file to write (JSONL, one conversation per line)."),
    n: int = typer.Option(400, "--n", min=1, help="Prompts to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out with other content."),
) -> None:
    """Offline prompts for the embedded tiny target: docstring → function requests from the Python
    standard library, files the target never trained on first (what `deepspec demo` uses)."""
    import json

    from deepspec_core.demo import demo_prompts
    from deepspec_core.errors import DataError
    from deepspec_core.io import atomic_write_text, output_file

    output_file(out, "--out", DataError)
    text = "".join(json.dumps(r) + "\n" for r in demo_prompts(n))
    if out.exists() and out.read_text() != text and not overwrite:
        raise DataError(f"{out} exists with other content", "choose another --out, or pass --overwrite")
    atomic_write_text(out, text)
    console.print(f"wrote {text.count(chr(10)):,} prompts → {out}")


@app.command("show")
@handle_errors
def show(
    file: Path = typer.Argument(..., help="Conversations file (JSONL)."),
    target: str = typer.Option(..., "--target", help="Target whose tokenizer and chat template render the samples."),
    n: int = typer.Option(2, "--n", help="Samples to show."),
    thinking: bool = typer.Option(False, "--thinking/--no-thinking", help="Render with thinking mode on."),
    max_length: int = typer.Option(4096, "--max-length", help="Truncation length, as in training."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per sample (id, supervised spans, counts, coverage) instead of colour."
    ),
) -> None:
    """Print rendered samples with supervised tokens highlighted, and the loss-mask coverage."""
    import json

    from deepspec_core.data.tokenize import SKIP_HINTS, TokenizeStats, iter_tokenized
    from deepspec_core.targets.hf import load_tokenizer

    tokenizer = load_tokenizer(target)
    stats = TokenizeStats()

    def skipped(conv_id: str, reason: str) -> None:
        if as_json:
            print(json.dumps({"id": conv_id, "skipped": reason, "hint": SKIP_HINTS.get(reason)}, ensure_ascii=False))
        else:
            err_console.print(f"[yellow]skipped[/] {conv_id}: {reason} ({SKIP_HINTS.get(reason)})")

    samples = iter_tokenized(file, tokenizer, max_length, thinking, min_loss_tokens=0, stats=stats, limit=n,
                             on_skip=skipped)
    for conv_id, s in samples:
        if as_json:
            print(json.dumps({
                "id": conv_id, "spans": s.supervised_texts(tokenizer), "supervised_tokens": s.num_loss_tokens,
                "tokens": s.num_tokens, "coverage": round(s.coverage, 4), "truncated": s.truncated,
            }, ensure_ascii=False))
            continue
        text = Text()
        for tid, m in zip(s.input_ids, s.loss_mask, strict=True):
            text.append(tokenizer.decode([tid]), style="bold black on green" if m else "dim")
        console.rule(f"{conv_id} · {s.num_tokens} tokens · {s.num_loss_tokens} supervised"
                     f"{' · truncated' if s.truncated else ''} · coverage {s.coverage:.2f}")
        console.print(text)
    if not as_json:
        console.rule()
        console.print(f"{stats.kept} of {stats.seen} samples usable [dim](highlighted = supervised; coverage = "
                      "supervised / the answers' own token count)[/]")
    if stats.skipped:
        err_console.print(f"[yellow]warning:[/] {stats.seen - stats.kept} of {stats.seen} skipped — "
                          f"{stats.describe_skips()}")


for _module in EXTRA_COMMAND_MODULES:
    importlib.import_module(_module).register(app)
