"""A cache run killed with SIGKILL mid-run and rerun equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cache_helpers import write

from deepspec_core.cache import format as fmt
from deepspec_core.cache.reader import FeatureCache

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("cache_resume_worker.py")
N = 40


def _run(out: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(N), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_then_rerun_gives_the_uninterrupted_cache(tmp_path):
    out = tmp_path / "killed"
    proc = _run(out, delay=0.3)
    deadline = time.monotonic() + 120
    while len(list((out / fmt.SHARDS).glob("*.json"))) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the worker wrote no shard in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / fmt.MANIFEST).exists()
    done_before = len(list((out / fmt.SHARDS).glob("*.json")))

    rerun = _run(out, delay=0.0)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read().decode()

    ref = tmp_path / "uninterrupted"
    write(ref, n=N, batch_size=2, shard_tokens=60)
    m_out, m_ref = (json.loads((d / fmt.MANIFEST).read_text()) for d in (out, ref))
    assert len(m_ref["shards"]) > done_before + 2  # the kill really was mid-run
    assert m_out["counts"] == m_ref["counts"]
    assert m_out["shards"] == m_ref["shards"]  # same bytes, same sha256
    a, b = FeatureCache(out), FeatureCache(ref)
    a.verify()
    for i in range(len(b)):
        for k, v in b[i].items():
            assert torch.equal(a[i][k], v), (i, k)
