"""``evaluate(...)``: decode every benchmark prompt speculatively, measure τ (and speed), write results.

Protocol (docs/evaluation.md, after the reference's eval): chat template of the first user turn,
generation prompt on, no system prompt, thinking mode as the draft was trained (``target.thinking``
of its spec) unless overridden; with ``all_turns`` every user turn is decoded, each after the
model's own earlier answers. Sample i of a benchmark decodes with a generator seeded ``seed + i``,
so a ``--limit`` run reproduces a prefix of the full run.

With ``speed`` on, each prompt is decoded speculatively (timed) and then by the target alone for
exactly as many tokens (timed, EOS ignored), in the same process, after a warm-up of both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deepspec_core import __version__
from deepspec_core.decode.policy import POLICIES, DraftLength, is_policy, profile_sps
from deepspec_core.decode.rounds import RoundOutcome
from deepspec_core.decode.speculative import Generation, speculative_generate, target_generate
from deepspec_core.errors import SpecError
from deepspec_core.eval import benchmarks as bm
from deepspec_core.eval import metrics as mt
from deepspec_core.eval.calibration import (
    calibrate_draft,
    calibration_report,
    load_temperatures,
    plot_reliability,
)
from deepspec_core.eval.loading import (
    LoadedDraft,
    default_out_dir,
    encode_prompt,
    eos_token_ids,
    load_draft,
)
from deepspec_core.io import atomic_write_json, atomic_write_text, output_dir
from deepspec_core.progress import NullStage, Progress, Stage, as_progress
from deepspec_core.specbase import check_draft_length


class _Clock:
    """Wall time of a block; CUDA events on GPU so queued kernels are counted."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """``fn(*args, **kwargs)`` and the seconds it took."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args, **kwargs)
            end.record()
            torch.cuda.synchronize()
            return out, start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        return out, time.perf_counter() - t0


@dataclass
class EvalSettings:
    temperature: float
    max_new_tokens: int
    num_draft_tokens: int
    thinking: bool
    seed: int = 0
    all_turns: bool = False
    speed: bool = False
    save_outputs: bool = False
    draft_length: DraftLength = field(default_factory=DraftLength)


@dataclass
class BenchmarkRun:
    outcomes: list[RoundOutcome] = field(default_factory=list)
    confident_rounds: list[tuple[list[float], RoundOutcome]] = field(default_factory=list)  # for calibration
    turns: int = 0
    generated: int = 0
    spec_seconds: float = 0.0
    target_seconds: float = 0.0
    timed_tokens: int = 0
    timed_rounds: int = 0
    timed_turns: int = 0
    spec_prefill_seconds: float = 0.0  # prompt forward + first token (+ draft start), timed apart
    target_prefill_seconds: float = 0.0
    prompt_rounds: list[tuple[int, int, int]] = field(default_factory=list)  # (sample, committed, rounds)
    outputs: list[dict[str, Any]] = field(default_factory=list)


def run_benchmark(
    loaded: LoadedDraft,
    prompts: bm.BenchmarkPrompts,
    s: EvalSettings,
    stage: Stage | None = None,
    indices: list[int] | None = None,
) -> BenchmarkRun:
    """Decode the prompts of one benchmark (each turn they hold) at ``indices`` (default: all);
    ``stage`` advances per sample, with τ so far."""
    stage = stage or NullStage()
    model, tok, draft = loaded.target.model, loaded.target.tokenizer, loaded.draft
    device = loaded.target.device
    eos = eos_token_ids(model, tok)
    clock = _Clock(device)
    out = BenchmarkRun()

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    if s.speed and (indices is None or indices):  # warm-up: allocator, kernels, lazy init of both paths
        ids = encode_prompt(tok, [{"role": "user", "content": prompts.turns[0][0]}], s.thinking, device)
        speculative_generate(
            model, draft, ids, s.num_draft_tokens, min(16, s.max_new_tokens), s.temperature, gen(0), eos,
            draft_length=s.draft_length,
        )
        target_generate(model, ids, min(16, s.max_new_tokens), s.temperature, gen(0))
    for i in range(len(prompts)) if indices is None else indices:
        turns = prompts.turns[i]
        messages: list[dict[str, str]] = []
        g = gen(s.seed + i)
        before = len(out.outcomes)
        for t, turn in enumerate(turns):
            messages.append({"role": "user", "content": turn})
            ids = encode_prompt(tok, messages, s.thinking, device)
            res: Generation
            res, secs = clock.time(
                speculative_generate,
                model,
                draft,
                ids,
                s.num_draft_tokens,
                s.max_new_tokens,
                s.temperature,
                g,
                eos,
                draft_length=s.draft_length,
            )
            out.outcomes += res.outcomes
            if len(res.confidences) == len(res.outcomes):
                out.confident_rounds += list(zip(res.confidences, res.outcomes, strict=True))
            out.turns += 1
            out.generated += len(res.tokens)
            if s.speed:
                # Same prompt, same number of tokens, EOS ignored: only the method differs.
                _, base = clock.time(
                    target_generate, model, ids, len(res.tokens), s.temperature, gen(s.seed + i)
                )
                # Each path's prefill alone (max_new_tokens = 1 stops after the first token): no
                # round's work, so --speed leaves it out of the round cost (make_speed).
                _, spec_pre = clock.time(speculative_generate, model, draft, ids, s.num_draft_tokens, 1,
                                         s.temperature, gen(s.seed + i), eos, draft_length=s.draft_length)
                _, base_pre = clock.time(target_generate, model, ids, 1, s.temperature, gen(s.seed + i))
                out.spec_seconds += secs
                out.target_seconds += base
                out.timed_tokens += len(res.tokens)
                out.timed_rounds += res.rounds
                out.timed_turns += 1
                out.spec_prefill_seconds += spec_pre
                out.target_prefill_seconds += base_pre
            text = tok.decode(res.tokens, skip_special_tokens=True)
            messages.append({"role": "assistant", "content": text})
            if s.save_outputs:
                out.outputs.append(
                    {
                        "sample": i,
                        "turn": t,
                        "prompt_ids": ids[0].tolist(),
                        "generated_ids": res.tokens,
                        "text": text,
                        "accept_lengths": res.accept_lengths,
                        "accepted_drafts": [o.accepted for o in res.outcomes],
                        "confidences": res.confidences or None,
                    }
                )
        mine = out.outcomes[before:]
        out.prompt_rounds.append((i, sum(o.committed for o in mine), len(mine)))
        # τ so far (committed tokens per round; and the speedup when timed): what a watcher of a long eval wants
        stage.advance(
            1,
            tau=sum(o.committed for o in out.outcomes) / len(out.outcomes) if out.outcomes else None,
            speedup=out.target_seconds / out.spec_seconds if out.spec_seconds > 0 else None,
        )
    return out


# -- the whole evaluation ---------------------------------------------------------------------


@dataclass
class EvalResult:
    results: mt.EvalResults
    out_dir: Path
    files: list[Path]
    main: bool = True  # False on the other processes of a multi-process run (they write nothing)


def _protocol(
    loaded: LoadedDraft, s: EvalSettings, infos: list[mt.BenchmarkInfo], thinking_source: str
) -> mt.Protocol:
    from deepspec_core.targets.hf import chat_template_hash

    t, d = loaded.target, loaded.spec.draft
    return mt.Protocol(
        target=t.path if Path(t.path).is_dir() else t.name,
        target_revision=t.revision,
        draft=str(loaded.step_dir.resolve()),
        algorithm=d.algo,
        temperature=s.temperature,
        max_new_tokens=s.max_new_tokens,
        thinking=s.thinking,
        thinking_source=thinking_source,
        chat_template_hash=chat_template_hash(t.tokenizer),
        all_turns=s.all_turns,
        subset_seed=bm.SUBSET_SEED,
        draft_params=d.draft_params(),
        num_draft_tokens=s.num_draft_tokens,
        draft_length=s.draft_length.name,
        draft_length_threshold=s.draft_length.threshold if s.draft_length.name == "threshold" else None,
        sts_temperatures=None if s.draft_length.temperatures is None else list(s.draft_length.temperatures),
        sps_profile=None if s.draft_length.sps is None else list(s.draft_length.sps),
        chain_drafting=True,
        bonus_token_in_tau=True,
        seed=s.seed,
        benchmarks=infos,
        deepspec_version=__version__,
        device=_device_name(t.device),
        dtype=str(t.dtype).removeprefix("torch."),
        draft_dtype=str(loaded.draft.param_dtype).removeprefix("torch."),
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()} threads"


def evaluate(
    draft: str | Path | LoadedDraft,
    benchmarks: list[str] | str | None = None,
    target: str | None = None,
    limit: int | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    num_draft_tokens: int | None = None,
    thinking: bool | None = None,
    data_dir: str | Path | None = None,
    seed: int | None = None,
    all_turns: bool | None = None,
    speed: bool = False,
    save_outputs: bool = False,
    out_dir: str | Path | None = None,
    device: str = "auto",
    draft_dtype: str = "auto",
    progress: Progress | bool | None = None,
    plots: bool = True,
    draft_length: str = "fixed",
    threshold: float = 0.5,
    calibrate: bool = False,
    calibration_data: str | Path | None = None,
    calibration_limit: int = 64,
) -> EvalResult:
    """Evaluate a trained draft on benchmarks; unset arguments come from the run's ``eval`` spec.

    ``draft_length`` picks the draft-length policy (:mod:`deepspec_core.decode.policy`); the
    scheduler profiles SPS(B) on this machine first. ``calibrate`` fits STS temperatures on
    held-out prompts (``calibration_data``, else the run's validation split) and stores them with
    the checkpoint; temperatures stored earlier are used otherwise. ``draft_dtype`` is the draft's
    decoding dtype (:func:`~deepspec_core.eval.loading.decode_draft_dtype`; ignored for a draft
    already loaded). ``progress`` reports each
    benchmark as a stage (:mod:`deepspec_core.progress`). Raises SpecError for an unknown policy
    and DataError when calibration has no held-out prompts, or an ``out_dir`` that is a file."""
    from deepspec_core.distributed import detect_env

    if out_dir:  # before the draft loads and the benchmarks decode, not when results are written
        output_dir(out_dir, "--out", SpecError)
    env = detect_env()
    reporter = as_progress(progress if env.is_main else False)  # one process reports
    loaded = draft if isinstance(draft, LoadedDraft) else load_draft(draft, target, device, draft_dtype)
    ev = loaded.spec.eval
    names = bm.parse_benchmarks(benchmarks if benchmarks is not None else ev.benchmarks)
    s = EvalSettings(
        temperature=ev.temperature if temperature is None else temperature,
        max_new_tokens=max_new_tokens or ev.max_new_tokens,
        num_draft_tokens=num_draft_tokens or loaded.spec.num_draft_tokens(),
        thinking=loaded.spec.target.thinking if thinking is None else thinking,
        seed=ev.seed if seed is None else seed,
        all_turns=ev.all_turns if all_turns is None else all_turns,
        speed=speed,
        save_outputs=save_outputs,
    )
    check_draft_length(s.num_draft_tokens, loaded.draft.max_proposal(), loaded.draft.algo, field="--num-draft-tokens")
    if not is_policy(draft_length):
        raise SpecError(f"--draft-length {draft_length!r} is not a policy", f"choose one of: {', '.join(POLICIES)}")
    temperatures = load_temperatures(loaded.step_dir)
    if calibrate:
        temperatures = calibrate_draft(loaded, s, calibration_data, calibration_limit, write=env.is_main,
                                       progress=reporter)
    sps = profile_sps(loaded.target.model, s.num_draft_tokens + 1) if draft_length == "scheduler" else None
    s.draft_length = DraftLength(draft_length, threshold, sps, None if temperatures is None else tuple(temperatures))
    thinking_source = "draft" if thinking is None or thinking == loaded.spec.target.thinking else "override"
    out = Path(out_dir).expanduser() if out_dir else default_out_dir(loaded)
    prompts = [bm.load_benchmark(n, data_dir or ev.data_dir, limit or ev.limit, s.all_turns) for n in names]
    per: dict[str, mt.BenchmarkResult] = {}
    files: list[Path] = []
    confident_rounds: list[tuple[list[float], RoundOutcome]] = []
    for p in prompts:
        mine = list(range(env.rank, len(p), env.world_size))
        with reporter.stage(f"eval {p.name}", total=len(mine), unit="samples") as stage:
            run = run_benchmark(loaded, p, s, stage=stage, indices=mine)
        if env.distributed:
            run = _gather(run)
        speed_ = (
            mt.make_speed(run.timed_tokens, run.target_seconds, run.spec_seconds, run.timed_rounds,
                          run.timed_turns, run.spec_prefill_seconds, run.target_prefill_seconds)
            if speed and run.timed_tokens
            else None
        )
        per[p.name] = mt.benchmark_result(
            run.outcomes, s.num_draft_tokens, len(p), run.turns, run.generated, speed_,
            [[c, r] for _, c, r in sorted(run.prompt_rounds)],
        )
        confident_rounds += run.confident_rounds
        if save_outputs and env.is_main:
            path = out / "outputs" / f"{p.name}.jsonl"
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in run.outputs))
            files.append(path)
    infos = [
        mt.BenchmarkInfo(
            name=p.name, domain=p.domain, samples=len(p), content_hash=p.content_hash, source=p.source
        )
        for p in prompts
    ]
    calibration = (
        calibration_report(confident_rounds, s.num_draft_tokens, temperatures) if confident_rounds else None
    )
    results = mt.EvalResults(
        protocol=_protocol(loaded, s, infos, thinking_source), benchmarks=per, macro=mt.macro_average(per),
        calibration=calibration,
    )
    if env.is_main:
        files += write_results(results, out, plots)
        if plots and calibration is not None:
            files.append(plot_reliability(confident_rounds, s.num_draft_tokens, temperatures, out / "calibration.png",
                                          f"{results.protocol.algorithm} · T={s.temperature:g}"))
    return EvalResult(results, out, files, env.is_main)


def _gather(run: BenchmarkRun) -> BenchmarkRun:
    """Merge every process's part of a benchmark (sums; outputs in sample order)."""
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, run)
    merged = BenchmarkRun()
    for r in parts:
        merged.outcomes += r.outcomes
        merged.confident_rounds += r.confident_rounds
        merged.turns += r.turns
        merged.generated += r.generated
        merged.spec_seconds += r.spec_seconds
        merged.target_seconds += r.target_seconds
        merged.timed_tokens += r.timed_tokens
        merged.timed_rounds += r.timed_rounds
        merged.timed_turns += r.timed_turns
        merged.spec_prefill_seconds += r.spec_prefill_seconds
        merged.target_prefill_seconds += r.target_prefill_seconds
        merged.prompt_rounds += r.prompt_rounds
        merged.outputs += r.outputs
    merged.outputs.sort(key=lambda o: (o["sample"], o["turn"]))
    return merged


def write_results(results: mt.EvalResults, out: Path, plots: bool = True) -> list[Path]:
    """results.json (validated against the schema), <benchmark>.json each, and the PNG plots."""
    data = json.loads(results.model_dump_json())
    mt.EvalResults.model_validate(data)
    files = [out / "results.json"]
    atomic_write_json(files[0], data)
    for name, r in data["benchmarks"].items():
        files.append(out / f"{name}.json")
        atomic_write_json(files[-1], {"benchmark": name, "protocol": data["protocol"], **r})
    if plots:
        from deepspec_core.eval.plots import plot_acceptance, plot_tau

        files += [plot_acceptance(results, out / "acceptance.png"), plot_tau(results, out / "tau.png")]
    return files
