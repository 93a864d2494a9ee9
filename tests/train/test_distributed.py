"""Two CPU processes (gloo, launched by `deepspec train --gpus 2` through accelerate) match one
process with the same global batch; the CLI resumes and refuses a changed spec."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from deepspec_core.distributed import free_port
from deepspec_core.spec import save_spec
from deepspec_core.train.loop import Runtime, train

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepspec_cli.main", *args], capture_output=True, text=True,
                          env=_env(), timeout=600)


def test_two_processes_match_one_with_the_same_global_batch(make_spec, tmp_path):
    sets = ("train.max_steps=4", "train.val_every=2", "train.save_every=4")
    one = train(make_spec("dflash", *sets, root=tmp_path / "one"), Runtime(progress=False, say=lambda m: None))
    spec_two = make_spec("dflash", *sets, root=tmp_path / "two")
    toml = tmp_path / "two.toml"
    save_spec(spec_two, toml)
    proc = _cli("train", str(toml), "--gpus", "2", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 process(es)" in proc.stdout
    a = load_file(str(one.checkpoint / "model.safetensors"))
    b = load_file(str(spec_two.run_dir() / "step_4" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # same data, same updates; only the order of floating-point sums differs
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-5)

    # A changed spec is refused with the difference, before any process is launched.
    bad = _cli("train", str(toml), "--set", "train.lr=0.1", "--gpus", "2", "--no-progress")
    assert bad.returncode == 1 and "train.lr: 0.003 → 0.1" in bad.stderr and "--fresh" in bad.stderr
    assert "launching" not in bad.stdout


def test_fsdp_under_an_existing_torchrun(make_spec, tmp_path):
    """`torchrun … deepspec train` (no --gpus) joins the launcher's process group; FSDP2 shards the draft."""
    spec = make_spec("dflash", "train.max_steps=2", "train.val_every=2", "train.save_every=2",
                     "train.distributed='fsdp'", root=tmp_path)
    toml = tmp_path / "fsdp.toml"
    save_spec(spec, toml)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "deepspec_cli.main", "train", str(toml), "--no-progress"],
        capture_output=True, text=True, timeout=600, env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 process(es)" in proc.stdout
    w = load_file(str(spec.run_dir() / "step_2" / "model.safetensors"))
    assert w and not any(k.startswith(("embed_tokens.", "target_head.")) for k in w)
