"""The one-command demo on its smallest budget: every stage runs, results compare, reruns reuse."""

from __future__ import annotations

import json

import pytest

from deepspec_core.demo import BUDGETS, run_demo
from deepspec_core.errors import SpecError
from deepspec_core.spec import algorithms

pytestmark = pytest.mark.e2e

ALGOS = algorithms()


def test_smoke_demo_end_to_end_and_rerun_reuses_stages(tiny_target, tmp_path):
    stages: list[str] = []
    res = run_demo(tmp_path / "demo", "smoke", progress=False, stage=stages.append, say=lambda _: None)
    assert [s.split(":")[0] for s in stages if s.startswith(("train", "eval"))] == ["train"] * 3 + ["eval"] * 3
    assert set(res.results) == set(ALGOS)
    for algo in ALGOS:
        data = json.loads(res.results[algo].read_text())
        assert data["protocol"]["algorithm"] == algo
        assert set(data["benchmarks"]) == set(BUDGETS["smoke"].benchmarks)
        taus = [b["tau"] for b in data["benchmarks"].values() if b["rounds"]]
        assert taus and data["macro"]["tau"] == pytest.approx(sum(taus) / len(taus))  # equal-weight mean
        speed = data["benchmarks"]["mbpp"]["speed"]  # measured: every mbpp token, timed both ways
        assert speed["tokens"] == data["benchmarks"]["mbpp"]["generated_tokens"]
        assert speed["speedup"] == pytest.approx(speed["target_seconds"] / speed["spec_seconds"])
    c = res.comparison
    assert [e.name for e in c.entries] == [f"tiny-{a}" for a in ALGOS]
    assert (res.compare_dir / "report.md").is_file() and (res.compare_dir / "tau_by_benchmark.png").is_file()

    # A rerun finds every stage done: no regen, cache or eval work, and training only resumes.
    stages.clear()
    again = run_demo(tmp_path / "demo", "smoke", progress=False, stage=stages.append, say=lambda _: None)
    assert not [s for s in stages if s.startswith(("regen", "cache", "eval", "fetch"))]
    assert again.results == res.results


def test_unknown_budget():
    with pytest.raises(SpecError, match="unknown --budget 'huge'"):
        run_demo("unused", "huge")


def _tau_content(results_json) -> dict:
    """results.json without what legitimately differs between two runs: wall-clock timings and the
    absolute paths of the home directory."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("speed", "speedup", "round_cost", "target", "draft")}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip(json.loads(results_json.read_text()))


def test_the_same_command_gives_the_same_numbers_in_fresh_homes(tiny_target, tmp_path):
    """`deepspec demo --budget smoke --seeds 2`, twice, each in a fresh DEEPSPEC_HOME and process:
    identical regenerated data and results (sampled regen is seeded per conversation; training and
    eval are seeded), and the table shows τ as mean ± sd over the two training seeds."""
    import os
    import shutil
    import subprocess
    import sys

    outs = []
    for i in range(2):
        home = tmp_path / f"home{i}"
        # The quick target's build is deterministic (tests/targets/test_tiny.py); reuse it.
        shutil.copytree(tiny_target, home / "targets" / tiny_target.name)
        out = tmp_path / f"demo{i}"
        proc = subprocess.run(
            [sys.executable, "-m", "deepspec_cli.main", "demo", "--budget", "smoke", "--seeds", "2", "--out", str(out)],
            env={**os.environ, "DEEPSPEC_HOME": str(home), "COLUMNS": "200"},
            capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert " ± " in proc.stdout and "replicas" in proc.stdout
        outs.append(out)
    a, b = outs
    regen = [json.loads(line)["messages"] for line in (a / "data" / "train.regen.jsonl").read_text().splitlines()]
    assert regen == [json.loads(line)["messages"]
                     for line in (b / "data" / "train.regen.jsonl").read_text().splitlines()]
    runs = sorted(p.relative_to(a) for p in a.glob("runs/demo/*/eval/*/results.json"))
    assert len(runs) == 2 * len(ALGOS)
    for rel in runs:
        assert _tau_content(a / rel) == _tau_content(b / rel), rel
    report = (a / "compare" / "report.md").read_text()
    assert "mean ± sample sd over 2 replicas" in report
