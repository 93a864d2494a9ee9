"""The one-command demo on its smallest budget: every stage runs, results compare, reruns reuse."""

from __future__ import annotations

import json

import pytest

from deepspec_core.demo import BUDGETS, run_demo
from deepspec_core.errors import SpecError
from deepspec_core.spec import ALGOS


def test_smoke_demo_end_to_end_and_rerun_reuses_stages(tiny_target, tmp_path):
    stages: list[str] = []
    res = run_demo(tmp_path / "demo", "smoke", progress=False, stage=stages.append, say=lambda _: None)
    assert [s.split(":")[0] for s in stages if s.startswith(("train", "eval"))] == ["train"] * 3 + ["eval"] * 3
    assert set(res.results) == set(ALGOS)
    for algo in ALGOS:
        data = json.loads(res.results[algo].read_text())
        assert data["protocol"]["algorithm"] == algo
        assert set(data["benchmarks"]) == set(BUDGETS["smoke"].benchmarks)
        assert data["macro"]["tau"] >= 1.0
        assert data["benchmarks"]["mbpp"]["speed"]["speedup"] > 0
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
