"""`deepspec demo`: the whole pipeline on the embedded tiny target, in one process.

Stages: tiny target → prompts → fetch → regen → feature cache → train Eagle3 / DFlash / DSpark →
eval (with speed) → compare. Every stage leaves an artefact that marks it done, so a rerun (or a
run after an interruption) reuses what is finished; the stages that do long work resume
themselves (regen by conversation id, the cache by shard, training from its last checkpoint).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from deepspec_core.errors import SpecError
from deepspec_core.io import output_dir
from deepspec_core.progress import Progress, as_progress
from deepspec_core.spec import RunSpec, algorithms, load_spec

if TYPE_CHECKING:
    from deepspec_core.compare import Comparison

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """How much work each stage does (`small`, the default, took ~7 minutes on 2 idle CPU cores)."""

    target_size: str  # which build of the tiny target: "quick" (seconds) or "default" (minutes, once)
    prompts: int  # conversations regenerated (train + held-out)
    regen_max_tokens: int
    train_steps: int
    global_batch: int
    eval_limit: int  # prompts per benchmark
    eval_max_new_tokens: int
    benchmarks: tuple[str, ...] = ("humaneval", "mbpp")
    seeds: int = 1  # training seeds per algorithm: with more than one, τ is shown as mean ± sd


BUDGETS = {
    # smoke: every stage once, in a few minutes, on the quick tiny target (what CI runs).
    "smoke": Budget(target_size="quick", prompts=48, regen_max_tokens=32, train_steps=6, global_batch=8, eval_limit=2,
                    eval_max_new_tokens=16),
    "small": Budget(target_size="default", prompts=800, regen_max_tokens=96, train_steps=300, global_batch=16,
                    eval_limit=16, eval_max_new_tokens=96),
    "medium": Budget(target_size="default", prompts=2400, regen_max_tokens=160, train_steps=1200, global_batch=32,
                     eval_limit=32, eval_max_new_tokens=128, benchmarks=("humaneval", "mbpp", "lbpp")),
}


@dataclass
class DemoResult:
    out_dir: Path
    runs: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Path] = field(default_factory=dict)  # algorithm → results.json of its seed-0 run
    replicas: dict[str, list[Path]] = field(default_factory=dict)  # algorithm → results.json of every seed
    compare_dir: Path | None = None  # set, with comparison, by the last stage
    comparison: Comparison | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


def demo_prompts(n: int) -> list[dict]:
    """Docstring → function requests from stdlib files, those the tiny target never trained on first."""
    from deepspec_core.targets import tiny_data

    root = tiny_data.stdlib_root()
    sources = tiny_data.read_sources(tiny_data.stdlib_files(root), root)
    ordered = sorted(sources, key=lambda src: not tiny_data.is_heldout(src.relpath))  # stable: held-out first
    rows: list[dict] = []
    for src in ordered:
        for conv in tiny_data.chat_pairs(src):
            # Only the request is kept: the target regenerates every answer itself.
            messages = [m for m in conv["messages"] if m["role"] != "assistant"]
            rows.append({"id": conv["id"], "messages": messages, "meta": {"source": "stdlib"}})
            if len(rows) >= n:
                return rows
    return rows


def demo_spec(algo: str, out: Path, target_dir: Path, b: Budget, seed: int = 0) -> RunSpec:
    data = out / "data"
    return load_spec(
        f"tiny-{algo}",
        [
            f"seed={seed}",
            f"name='tiny-{algo}{f'-seed{seed}' if seed else ''}'",
            f"target.model={json.dumps(str(target_dir))}",
            f"data.train=[{json.dumps(str(data / 'train.regen.jsonl'))}]",
            f"data.eval=[{json.dumps(str(data / 'train.heldout.regen.jsonl'))}]",
            f"cache.path={json.dumps(str(out / 'features'))}",
            f"output.root={json.dumps(str(out / 'runs'))}",
            "project='demo'",
            f"train.max_steps={b.train_steps}",
            f"train.global_batch_size={b.global_batch}",
            f"train.val_every={max(1, b.train_steps // 2)}",
            f"train.save_every={b.train_steps}",
            "train.tensorboard=false",
            f"eval.benchmarks={json.dumps(list(b.benchmarks))}",
            f"eval.limit={b.eval_limit}",
            f"eval.max_new_tokens={b.eval_max_new_tokens}",
        ],
    )


def run_demo(
    out_dir: str | Path,
    budget: str = "small",
    seeds: int | None = None,
    progress: Progress | bool | None = None,
    stage: Callable[[str], None] = print,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Every stage in turn (``stage`` gets each one's title, ``say`` the notes); ``progress``
    reports the long ones (:mod:`deepspec_core.progress`)."""
    from deepspec_core.cache.writer import build_cache
    from deepspec_core.compare import compare
    from deepspec_core.data.fetch import fetch
    from deepspec_core.data.regen import resolve_settings, run_regen
    from deepspec_core.eval.benchmarks import packaged_prompts_dir
    from deepspec_core.eval.runner import evaluate
    from deepspec_core.targets.tiny import ensure_tiny_target
    from deepspec_core.train.loop import Runtime, train

    if budget not in BUDGETS:
        raise SpecError(f"unknown --budget {budget!r}", f"choose one of: {', '.join(BUDGETS)}")
    b = BUDGETS[budget]
    progress = as_progress(progress)
    n_seeds = b.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise SpecError(f"--seeds {n_seeds} must be at least 1", "pass --seeds 1 (one training run per algorithm) or more")
    out = output_dir(out_dir, "--out", SpecError).resolve()
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)

    def timed(name: str, fn: Callable[[], T]) -> T:
        stage(name)
        t0 = time.perf_counter()
        value = fn()
        result.stage_seconds[name] = result.stage_seconds.get(name, 0.0) + time.perf_counter() - t0
        return value

    target_dir = timed("target: the embedded tiny target", lambda: ensure_tiny_target(b.target_size, progress=progress))

    prompts = data / "prompts.jsonl"
    if not prompts.exists():
        rows = demo_prompts(b.prompts)
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_file = data / "train.jsonl"
    if not train_file.exists():
        timed("fetch: prompts → conversations", lambda: fetch(str(prompts), train_file, test_size=0.1, seed=0))

    algos = algorithms()  # the first registered is the comparison's baseline
    specs = {(algo, seed): demo_spec(algo, out, target_dir, b, seed) for seed in range(n_seeds) for algo in algos}
    first = specs[(algos[0], 0)]
    settings = resolve_settings(None, str(target_dir), thinking=False, max_tokens=b.regen_max_tokens, batch_size=32)
    for name in ("train", "train.heldout"):
        src, dst = data / f"{name}.jsonl", data / f"{name}.regen.jsonl"
        if not dst.exists():
            timed(f"regen: the target answers {src.name}",
                  functools.partial(run_regen, src, dst, settings, progress=progress, warn=say))

    if not (Path(first.cache_dir()) / "manifest.json").exists():
        timed("cache: target features → compressed shards", lambda: build_cache(first, progress=progress))

    runs: dict[tuple[str, int], Path] = {}
    for (algo, seed), spec in specs.items():
        label = f"train: {algo}" + (f" (seed {seed})" if n_seeds > 1 else "")
        runs[(algo, seed)] = timed(label, functools.partial(train, spec, Runtime(progress=progress, say=say))).run_dir

    for (algo, seed), run_dir in runs.items():
        found = sorted(run_dir.glob("eval/*/results.json"))
        if not found:
            label = f"eval: {algo}" + (f" (seed {seed})" if n_seeds > 1 else "") + " (τ and speed)"
            ev = timed(label, functools.partial(evaluate, run_dir, data_dir=packaged_prompts_dir(), speed=True,
                                                progress=progress))
            found = [ev.out_dir / "results.json"]
        result.replicas.setdefault(algo, []).append(found[-1])
    result.runs = {algo: runs[(algo, 0)] for algo in algos}
    result.results = {algo: result.replicas[algo][0] for algo in algos}

    result.compare_dir = out / "compare"
    result.comparison, _ = timed(
        "compare",
        lambda: compare([result.replicas[a] for a in algos], result.compare_dir, baseline=f"tiny-{algos[0]}"),
    )
    return result
