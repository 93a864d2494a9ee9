"""The benchmark scripts still run against the code they measure (they are not imported elsewhere)."""

from __future__ import annotations

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
