"""`deepspec data cache` and `deepspec data inspect`: build, size and check feature caches.

Registered on the `data` group by ``register(app)`` (called from data_cmd.py).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_cli.progress import progress_for

console = make_console()

SET_HELP = "Override a field: --set cache.codec=bf16-zstd (value parsed as TOML). Repeatable."


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n}"


def _print_estimate(est) -> None:
    if est.extrapolated_from:
        where = f"in ~{est.samples:,} samples, extrapolated from {est.extrapolated_from:,} conversations"
    elif est.samples:
        where = f"in {est.samples:,} samples (tokenise-only pass)"
    else:
        where = "(given with --tokens)"
    console.print(
        f"[bold]{est.tokens:,}[/] tokens {where}; "
        f"H = {est.hidden_size}, K = {est.num_layers} captured layers, shards of {est.shard_size_mb} MB"
    )
    if est.skipped:
        console.print("skipped: " + ", ".join(f"{k}: {v:,}" for k, v in est.skipped.items()))
    console.print(f"raw bf16 (reference layout, 4+2+2·H·(K+1) bytes/token): [bold]{_size(est.raw_bf16_bytes)}[/]")
    t = Table("codec", "bytes/token", "total", "× vs raw bf16", "shards", "lossless")
    for r in est.rows:
        t.add_row(r.codec, f"{r.bytes_per_token:,.0f}", _size(r.total_bytes), f"{r.ratio_vs_raw_bf16:.2f}",
                  f"{r.shards:,}", "yes" if r.lossless else "no")
    console.print(t)
    console.print("[dim]bytes/token = 5 + 8 + H·(K·aux + final) bytes per value (8: the target summary); per-codec values measured by "
                  "benchmarks/cache_codecs.py (docs/cache.md)[/]")


@handle_errors
def cache(
    spec: str = typer.Argument(..., help="Preset name or TOML spec file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    inputs: list[str] = typer.Option([], "--in", help="Conversation file (JSONL); repeatable. Default: data.train."),
    out: Path | None = typer.Option(None, "--out", help="Cache directory. Default: cache.path of the spec."),
    codec: str | None = typer.Option(
        None, "--codec", help="Codec of the shards (docs/cache.md lists them; a wrong name lists them too). Default: cache.codec."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Sequences per target forward."),
    estimate: bool = typer.Option(False, "--estimate", help="Print sizes per codec and exit without writing."),
    sample: int | None = typer.Option(None, "--sample", min=1, help="With --estimate: tokenise N conversations and extrapolate."),
    tokens: float | None = typer.Option(None, "--tokens", help="With --estimate: assume this many tokens (no tokenising)."),
) -> None:
    """Run the target over the training data and write the compressed feature cache (resumable)."""
    from deepspec_core.cache.estimate import estimate_cache
    from deepspec_core.spec import load_spec

    resolved = load_spec(spec, set_)
    if not estimate and (tokens is not None or sample is not None):  # else a full cache would run unasked
        from deepspec_core.errors import SpecError

        given = "--tokens" if tokens is not None else "--sample"
        raise SpecError(f"{given} only sizes an estimate", f"add --estimate, or drop {given} to build the cache")
    if estimate:
        _print_estimate(estimate_cache(resolved, inputs or None, sample, int(tokens) if tokens else None))
        return
    out_dir = out or resolved.cache_dir()
    with progress_for(console) as progress:
        from deepspec_core.cache import writer

        manifest = writer.build_cache(resolved, out_dir, inputs or None, codec, batch_size, progress)
    if manifest is None:
        console.print("[green]this rank's shards are written[/]; rank 0 writes the index and manifest")
        return
    _print_summary(out_dir, manifest)


def _print_summary(out_dir: Path, manifest: dict) -> None:
    s = manifest["sizes"]
    c = manifest["counts"]
    console.print(
        f"[green]cache complete[/] {out_dir}: {c['samples']:,} samples, {c['tokens']:,} tokens, "
        f"{len(manifest['shards'])} shards, {_size(s['bytes'])} ({s['bytes_per_token']:,.0f} bytes/token), "
        f"{s['ratio_vs_raw_bf16']:.2f}× smaller than raw bf16 ({_size(s['raw_bf16_bytes'])}), codec {manifest['codec']}"
    )
    if c.get("truncated"):
        console.print(f"{c['truncated']:,} samples cut to data.max_length = {manifest['max_length']:,} tokens")
    if c["skipped"]:
        from deepspec_core.data.tokenize import describe_skips

        console.print("skipped: " + describe_skips(c["skipped"]))


@handle_errors
def inspect(
    cache_dir: Path = typer.Argument(..., help="Feature cache directory."),
    verify: bool = typer.Option(False, "--verify", help="Check every shard's sha256 against the manifest."),
) -> None:
    """Print a cache's manifest, sizes and ratio vs raw bf16; --verify checks every checksum."""
    from deepspec_core.cache.codecs import get_codec
    from deepspec_core.cache.format import describe
    from deepspec_core.cache.reader import FeatureCache

    fc = FeatureCache(cache_dir)
    m = fc.manifest
    s = describe(m)
    t = Table(show_header=False, box=None)
    target = m["target"]
    rows = [
        ("target", f"{target['model']}" + (f" @ {target['revision']}" if target.get("revision") else "")),
        ("tokenizer / chat template", f"{target.get('tokenizer_hash')} / {target.get('chat_template_hash')}"),
        ("layer ids · hidden size", f"{m['layer_ids']} · {m['hidden_size']}"),
        ("codec", f"{m['codec']} ({get_codec(m['codec']).description})"),
        ("max length · thinking", f"{m['max_length']} · {m['thinking']}"),
        ("samples · tokens", f"{s['samples']:,} · {s['tokens']:,} ({m['counts']['loss_tokens']:,} supervised)"),
        ("skipped", ", ".join(f"{k}: {v:,}" for k, v in m["counts"]["skipped"].items()) or "none"),
        ("size", f"{_size(s['bytes'])} in {len(m['shards'])} shards, {s['bytes_per_token']:,.0f} bytes/token"),
        ("vs raw bf16", f"{_size(s['raw_bf16_bytes'])} → {s['ratio_vs_raw_bf16']:.2f}× smaller"),
        ("sources", "; ".join(f"{x['path']} ({x['sha256'][:12]})" for x in m["sources"])),
        ("deepspec", f"{m['deepspec_version']} (format {m['format_version']})"),
    ]
    for k, v in rows:
        t.add_row(f"[bold]{k}[/]", v)
    console.print(t)
    if verify:
        total = sum(info["bytes"] for info in m["shards"])
        with progress_for(console) as progress, progress.stage("verify", total=total / 1e6, unit="MB") as stage:
            fc.verify(on_shard=lambda name, n: stage.advance(n / 1e6))
        console.print(f"[green]ok[/] all {len(m['shards'])} shard checksums match")


def register(app: typer.Typer) -> None:
    """Add `cache` and `inspect` to the `data` command group."""
    app.command("cache")(cache)
    app.command("inspect")(inspect)
