"""The benchmark scripts still run against the code they measure (they are not imported elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_train_flops_counts_less_work_when_nothing_is_recomputed():
    out = subprocess.run([sys.executable, str(BENCH / "train_flops.py"), "--hidden", "64", "--vocab", "512",
                          "--seq", "48", "--anchors", "4"], capture_output=True, text=True, check=True).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert set(rows) == {"eagle3", "dflash", "dspark"}
    for kept, recomputed, ratio in rows.values():
        assert float(kept) < float(recomputed) and float(ratio) < 1


def test_target_summary_benchmark_builds_both_formats_and_compares_them(tiny_target, chat_file, tmp_path):
    sets = [f"target.model={tiny_target}", "data.max_length=96", "draft.draft_vocab_size=64",
            "train.global_batch_size=4", "train.micro_batch_size=4"]
    out = subprocess.run(
        [sys.executable, str(BENCH / "target_summary.py"), "tiny-dspark", "--data", str(chat_file),
         "--work", str(tmp_path), "--steps", "1", "--repeats", "1", *[a for s in sets for a in ("--set", s)]],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"},
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["tiny-dspark"]
    for r in rows:
        baseline, summary, speedup = (c.strip() for c in r.split("│")[2:5])
        assert float(baseline.replace(",", "")) > 0 and float(summary.replace(",", "")) > 0 and speedup.endswith("×")
    assert "cache build: format 1" in out
    assert '"format_version": 1' in (tmp_path / "cache-format1" / "manifest.json").read_text()
    assert '"format_version": 2' in (tmp_path / "cache-format2" / "manifest.json").read_text()
