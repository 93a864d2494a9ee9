"""`deepspec eval`: τ per benchmark and position, and the measured speedup, of a trained draft."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_cli.progress import progress_for
from deepspec_core.eval.metrics import BenchmarkResult, EvalResults, MacroResult

console = make_console()


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"  # undefined (no round got there), not 0


def render(r: EvalResults) -> list[Table]:
    """τ (and speed) per benchmark; conditional acceptance per draft position."""
    p = r.protocol
    k = p.num_draft_tokens
    items: list[tuple[str, BenchmarkResult | MacroResult]] = [*r.benchmarks.items(), ("macro", r.macro)]
    policy = p.draft_length + (f" {p.draft_length_threshold:g}" if p.draft_length_threshold is not None else "")
    main = Table(
        title=f"{p.algorithm}: τ (bonus included), T={p.temperature:g}, k={k} ({policy}), "
        f"thinking {'on' if p.thinking else 'off'}"
    )
    speed = any(b.speed is not None for b in r.benchmarks.values())
    for col in ["benchmark", "samples", "rounds", "drafted/round", "τ", "τ 95% CI"] + (
        ["target tok/s", "spec tok/s", "round cost", "speedup"] if speed else []
    ):
        main.add_column(col, justify="left" if col == "benchmark" else "right")
    pos = Table(title="conditional acceptance by draft position")
    pos.add_column("benchmark")
    for j in range(1, k + 1):
        pos.add_column(str(j), justify="right")
    for name, res in items:
        if name == "macro":
            main.add_section()
            pos.add_section()
        drafted = getattr(res, "drafted_tokens", None)
        per_round = "" if drafted is None else _num(drafted / res.rounds if res.rounds else None)
        ci = res.tau_ci95
        cells = [name, str(res.samples), str(res.rounds), per_round, _num(res.tau),
                 "–" if ci is None else f"{ci[0]:.2f}–{ci[1]:.2f}"]
        if speed:
            s = getattr(res, "speed", None)
            if s is not None:
                cells += [f"{s.target_tokens_per_s:.1f}", f"{s.spec_tokens_per_s:.1f}", _num(s.round_cost),
                          f"{s.speedup:.2f}×"]
            else:  # the macro row: means over the benchmarks
                macro_speedup, macro_cost = getattr(res, "speedup", None), getattr(res, "round_cost", None)
                cells += ["", "", _num(macro_cost), f"{macro_speedup:.2f}×" if macro_speedup else "–"]
        style = "bold" if name == "macro" else None
        main.add_row(*cells, style=style)
        pos.add_row(name, *(_num(a) for a in res.acceptance_conditional), style=style)
    tables = [main, pos]
    cal = r.calibration
    if cal is not None:
        t = Table(title="confidence calibration of Π c_i per position (ECE 15 bins / AUC)")
        t.add_column("")
        for j in range(1, len(cal.rounds) + 1):
            t.add_column(str(j), justify="right")
        t.add_row("raw", *(f"{_num(e)} / {_num(a)}" for e, a in zip(cal.ece15_raw, cal.auc_raw, strict=True)))
        if cal.ece15_sts is not None and cal.auc_sts is not None:
            t.add_row("STS", *(f"{_num(e)} / {_num(a)}" for e, a in zip(cal.ece15_sts, cal.auc_sts, strict=True)))
        tables.append(t)
    return tables


@handle_errors
def eval_command(
    draft: Path = typer.Option(
        ..., "--draft", help="Run directory (its latest checkpoint), a step_<N> directory, or a speculators-format directory (deepspec export, or a public draft)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Target to verify with (default: the draft's own)."
    ),
    benchmarks: str | None = typer.Option(
        None,
        "--benchmarks",
        help="Comma-separated benchmarks, or 'all' for the reference nine (default: the run's eval spec).",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Samples per benchmark (a prefix of the full set)."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", min=0.0, help="Sampling temperature; 0 is greedy."
    ),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="New tokens per turn."),
    num_draft_tokens: int | None = typer.Option(
        None, "--num-draft-tokens", min=1, help="Tokens drafted per round (default: block size / TTT length)."
    ),
    thinking: bool | None = typer.Option(
        None, "--thinking/--no-thinking", help="Override the thinking mode the draft was trained with."
    ),
    data_dir: str | None = typer.Option(
        None,
        "--data-dir",
        help="Directory of <benchmark>.jsonl prompt files ({'turns': [...]}); 'packaged' for the shipped ones.",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (sample i decodes with seed + i)."),
    all_turns: bool | None = typer.Option(
        None,
        "--all-turns/--first-turn",
        help="Decode every user turn (mt-bench's second too); default: the first user turn only, as the reference.",
    ),
    speed: bool = typer.Option(
        False, "--speed", help="Also time target-only decoding of the same prompts and lengths."
    ),
    save_outputs: bool = typer.Option(
        False, "--save-outputs", help="Write outputs/<benchmark>.jsonl (ids, text, accepted lengths)."
    ),
    draft_length: str = typer.Option(
        "fixed", "--draft-length",
        help="Draft tokens verified per round: fixed (all k), threshold (stop at the first slot whose confidence is "
        "below --threshold, as the reference) or scheduler (DSpark's Algorithm 1 with SPS profiled here).",
    ),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Confidence threshold of --draft-length threshold."),
    calibrate: bool = typer.Option(
        False, "--calibrate",
        help="Fit STS temperatures of the confidences on held-out prompts first and store them with the checkpoint.",
    ),
    calibration_data: Path | None = typer.Option(
        None, "--calibration-data", help="Held-out conversations for --calibrate (default: the run's validation split)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: <run>/eval/<step>/; <export>-eval/ beside an imported export)."),
    device: str = typer.Option("auto", "--device", help="Device: auto, cpu, cuda, cuda:1, ..."),
    draft_dtype: str = typer.Option(
        "auto", "--draft-dtype",
        help="dtype the draft decodes in: auto (the target's; bf16 beside an fp32 target on a CPU), "
        "bfloat16, float16 or float32. It changes the proposals, never the output.",
    ),
) -> None:
    """Evaluate a trained draft: lossless speculative decoding on benchmarks → results.json, plots, table."""
    from deepspec_core.distributed import leaving_process_group
    from deepspec_core.errors import SpecError
    from deepspec_core.eval.loading import load_draft
    from deepspec_core.eval.runner import evaluate
    from deepspec_core.io import output_dir

    if out:  # before the draft loads (evaluate checks again for library callers with a loaded draft)
        output_dir(out, "--out", SpecError)
    # load_draft joins the group under torchrun / SLURM; every process leaves it before exiting.
    with leaving_process_group(), progress_for(console) as progress:
        loaded = load_draft(draft, target, device, draft_dtype)
        if thinking is not None and thinking != loaded.spec.target.thinking:
            console.print(
                f"[yellow]note:[/] thinking {'on' if thinking else 'off'} overrides the draft's training "
                f"setting ({'on' if loaded.spec.target.thinking else 'off'})"
            )
        res = evaluate(
            loaded,
            benchmarks,
            limit=limit,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            num_draft_tokens=num_draft_tokens,
            thinking=thinking,
            data_dir=data_dir,
            seed=seed,
            all_turns=all_turns,
            speed=speed,
            save_outputs=save_outputs,
            out_dir=out,
            progress=progress,
            draft_length=draft_length,
            threshold=threshold,
            calibrate=calibrate,
            calibration_data=calibration_data,
        )
    if not res.main:
        return  # another process of a multi-process run prints the results
    for table in render(res.results):
        console.print(table)
    console.print(
        f"[dim]thinking {'on' if res.results.protocol.thinking else 'off'} "
        f"({'as trained' if res.results.protocol.thinking_source == 'draft' else 'override'}); "
        f"checkpoint {loaded.step_dir}[/]"
    )
    console.print(f"wrote {res.out_dir / 'results.json'} (+ {len(res.files) - 1} more files)")
