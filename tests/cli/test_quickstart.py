"""docs/quickstart.md runs as written: its stage-by-stage block, executed by bash on the quick tiny
target in a fresh directory and DEEPSPEC_HOME, ends in a comparison of three evaluated drafts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"


def stage_block() -> str:
    section = DOC.read_text().split("## The same, stage by stage", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_stage_by_stage_block_runs_as_written(tiny_target, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tiny_target, home / "targets" / tiny_target.name)  # the quick build, as tests share it
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DEEPSPEC_HOME": str(home), "TARGET": "tiny-quick", "STEPS": "2", "N": "32",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", stage_block()], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((work / "compare" / "summary.json").read_text())
    assert set(summary["drafts"]) == {"tiny-eagle3", "tiny-dflash", "tiny-dspark"}
    assert "macro" in summary["tau"] and (work / "compare" / "speedup_by_benchmark.png").is_file()
    assert "validation samples from data.eval" in proc.stdout
