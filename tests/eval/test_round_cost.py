"""benchmarks/round_cost.py on a tiny run: every part of a round is reported, and they make up
the round without counting anything twice, for both default variants (packed weights and a bf16
draft; plain F.linear and an fp32 draft)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_runner import _run_dir

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "round_cost.py"
PARTS = ("target forward", "target lm_head", "verify rule", "cache crop", "draft propose", "draft commit", "other")


def test_round_cost_reports_the_parts_of_a_round_in_target_steps(tmp_path, tiny_target):
    run = _run_dir(tmp_path, tiny_target, "dspark")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(run), "--k", "3", "--tokens", "6", "--prompts", "1", "--repeats", "1"],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout
    sections = out.split("\ndspark (")[1:]
    assert [s.split("), ")[1].split(", k =")[0] for s in sections] == [
        "packed kernels, bfloat16 draft", "plain kernels, float32 draft"]  # the default variants
    taus = []
    for s in sections:
        ms = {m[1].strip(): (float(m[2]), float(m[3]))
              for m in re.finditer(r"^  ([a-z_ ]+?)\s+(-?[\d.]+) ms\s+(-?[\d.]+) steps", s, re.M)}
        assert set(ms) == {*PARTS, "round"}, s
        assert all(ms[p][0] > 0 for p in ("target forward", "target lm_head", "draft propose", "draft commit"))
        # "other" is what no timer saw: a part counted twice (the prefill, say) would make it negative
        assert -0.05 * ms["round"][0] <= ms["other"][0] < ms["round"][0] / 2, s
        # in target steps, each part is its ms over one and the same step
        step = float(re.search(r"target-only step ([\d.]+) ms", s)[1])
        assert ms["round"][1] == pytest.approx(ms["round"][0] / step, rel=0.1, abs=0.01)
        taus.append(float(re.search(r"rounds, τ ([\d.]+)", s)[1]))
    assert all(t >= 1 for t in taus)  # a round commits at least one token
    assert len(re.findall(r"^  .*, (packed|plain) kernels, \w+ draft: [\d.]+ ms, [\d.]+$", out, re.M)) == 2
