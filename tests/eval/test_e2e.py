"""End to end on CPU: tiny target → regenerated conversations → feature cache → each algorithm
trained briefly → eval on two benchmarks → τ > 1, arrays of the right length, a valid results.json."""

from __future__ import annotations

import json
import time

import pytest

from deepspec_core.eval.metrics import EvalResults
from deepspec_core.spec import algorithms

pytestmark = pytest.mark.e2e

ALGOS = algorithms()
K = 4  # the tiny presets' TTT length / block size
TRAIN_STEPS = 40


@pytest.fixture(scope="module")
def pipeline(tiny_target, tmp_path_factory):
    """Runs every stage once; returns {algo: results.json path} and the stage timings."""
    import torch

    from deepspec_core.cache.writer import build_cache
    from deepspec_core.data.fetch import fetch
    from deepspec_core.data.regen import resolve_settings, run_regen
    from deepspec_core.eval.runner import evaluate
    from deepspec_core.spec import load_spec
    from deepspec_core.targets import tiny_data as td
    from deepspec_core.train.loop import Runtime, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend
    out = tmp_path_factory.mktemp("e2e")
    times: dict[str, float] = {}

    root = td.stdlib_root()
    files = [
        f for f in td.stdlib_files(root) if f.name in ("textwrap.py", "shlex.py", "fractions.py", "string.py")
    ]
    rows = []
    for src in td.read_sources(files, root):
        for conv in td.chat_pairs(src, max_answer_chars=600):
            rows.append(
                {"id": conv["id"], "messages": [m for m in conv["messages"] if m["role"] != "assistant"]}
            )
    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows[:48]))

    t0 = time.perf_counter()
    fetch(str(prompts), out / "train.jsonl", test_size=0, seed=0)
    settings = resolve_settings(None, str(tiny_target), thinking=False, max_tokens=64, batch_size=16)
    run_regen(out / "train.jsonl", out / "train.regen.jsonl", settings)
    times["regen"] = time.perf_counter() - t0

    def spec(algo):
        return load_spec(
            f"tiny-{algo}",
            [
                f"target.model='{tiny_target}'",
                f"data.train=['{out / 'train.regen.jsonl'}']",
                "data.eval=[]",
                "data.max_length=160",
                f"cache.path='{out / 'features'}'",
                f"output.root='{out / 'runs'}'",
                f"train.max_steps={TRAIN_STEPS}",
                "train.global_batch_size=8",
                "train.micro_batch_size=8",
                "train.val_samples=0",
                f"train.save_every={TRAIN_STEPS}",
                f"train.val_every={TRAIN_STEPS}",
                "train.tensorboard=false",
                "train.num_workers=0",
            ],
        )

    t0 = time.perf_counter()
    build_cache(spec(ALGOS[0]))
    times["cache"] = time.perf_counter() - t0
    results = {}
    for algo in ALGOS:
        t0 = time.perf_counter()
        res = train(spec(algo), Runtime(progress=False, say=lambda _line: None, device="cpu"))
        times[f"train {algo}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = evaluate(
            res.run_dir,
            benchmarks="humaneval,mbpp",
            limit=2,
            temperature=0.0,
            max_new_tokens=32,
            data_dir="packaged",
            speed=True,
            save_outputs=True,
            progress=False,
        )
        times[f"eval {algo}"] = time.perf_counter() - t0
        results[algo] = ev.out_dir / "results.json"
        sampled = evaluate(res.run_dir, benchmarks="humaneval,mbpp", limit=2, temperature=1.0, max_new_tokens=32,
                           data_dir="packaged", save_outputs=True, out_dir=ev.out_dir / "t1", progress=False,
                           plots=False)
        results[f"{algo} T=1"] = sampled.out_dir / "results.json"
    torch.set_num_threads(threads)
    print("stage seconds:", {k: round(v, 1) for k, v in times.items()})
    return results


@pytest.mark.parametrize("algo", ALGOS)
def test_trained_drafts_are_accepted_and_results_are_valid(pipeline, algo):
    r = EvalResults.model_validate_json(pipeline[algo].read_text())
    assert r.protocol.algorithm == algo and r.protocol.num_draft_tokens == K
    assert [b.name for b in r.protocol.benchmarks] == ["humaneval", "mbpp"]
    for b in r.benchmarks.values():
        assert len(b.acceptance_unconditional) == len(b.acceptance_conditional) == K
        assert len(b.accept_length_counts) == len(b.accept_length_frac) == K + 1
        assert b.samples == 2 and b.rounds > 0 and b.speed is not None
    print(algo, {n: round(b.tau, 2) for n, b in r.benchmarks.items()}, "speedup", round(r.macro.speedup, 2))
    assert r.macro.tau > 1.0


@pytest.mark.parametrize("temperature", ["", " T=1"])
@pytest.mark.parametrize("algo", ALGOS)
def test_trained_drafts_are_credited_only_with_committed_tokens(pipeline, algo, temperature):
    path = pipeline[algo + temperature]
    r = EvalResults.model_validate_json(path.read_text())
    for name, b in r.benchmarks.items():
        rows = [json.loads(line) for line in (path.parent / "outputs" / f"{name}.jsonl").read_text().splitlines()]
        for row in rows:
            assert sum(row["accept_lengths"]) + 1 == len(row["generated_ids"])
        assert b.generated_tokens == sum(len(row["generated_ids"]) for row in rows) == sum(
            (i + 1) * c for i, c in enumerate(b.accept_length_counts)
        ) + b.turns
