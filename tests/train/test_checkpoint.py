"""Run directories: spec comparison, atomic step_<N> saves, step_latest, retention, RNG round trip."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from deepspec_core.errors import CheckpointError
from deepspec_core.runs import load_weights
from deepspec_core.spec import load_spec
from deepspec_core.train import checkpoint as ckpt
from deepspec_core.train.metrics import truncate_metrics

pytestmark = pytest.mark.unit


def _spec(tmp_path, *sets):
    return load_spec("tiny-dflash", [f"output.root='{tmp_path}'", *sets])


def _save(run, spec, step, keep=2):
    state = ckpt.TrainState(step=step, total_steps=100)
    w = {"fc.weight": torch.full((2, 3), float(step))}
    return ckpt.save_checkpoint(run, state, w, {"algo": "dflash"}, {"state": {}}, [ckpt.rng_state()], keep)


def test_logging_fields_may_change_but_training_fields_may_not(tmp_path):
    a = _spec(tmp_path)
    b = _spec(tmp_path, "train.log_every=1", "train.wandb=true", "eval.limit=3", "train.save_every=7")
    assert ckpt.spec_differences(a, b) == []
    c = _spec(tmp_path, "train.lr=1e-3", "draft.block_size=6")
    diffs = ckpt.spec_differences(a, c)
    assert len(diffs) == 2 and any(d.startswith("train.lr: 0.003") for d in diffs)


def test_prepare_refuses_a_changed_spec_and_fresh_starts_over(tmp_path):
    spec = _spec(tmp_path)
    run, resume = ckpt.prepare_run_dir(spec)
    assert resume is None and run.spec_path.is_file()
    _save(run, spec, 5)
    run2, resume = ckpt.prepare_run_dir(_spec(tmp_path, "train.log_every=1"))
    assert resume == run.step_dir(5)
    with pytest.raises(CheckpointError, match=r"train\.lr") as err:
        ckpt.prepare_run_dir(_spec(tmp_path, "train.lr=1e-3"))
    assert "--fresh" in err.value.hint
    run3, resume = ckpt.prepare_run_dir(_spec(tmp_path, "train.lr=1e-3"), fresh=True)
    assert resume is None and run3.steps() == []
    assert "0.001" in run3.spec_path.read_text()


def test_save_layout_latest_and_retention(tmp_path):
    spec = _spec(tmp_path)
    run, _ = ckpt.prepare_run_dir(spec)
    for step in (2, 4, 6):
        path = _save(run, spec, step)
    assert run.steps() == [4, 6]
    assert (run.path / "step_latest").is_symlink() and run.latest() == path
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", "model.safetensors", "training_state"]
    ts = sorted(p.name for p in (path / "training_state").iterdir())
    assert ts == ["optimizer.pt", "rng_rank0.pt", "state.json"]
    assert torch.equal(load_weights(path)["fc.weight"], torch.full((2, 3), 6.0))
    assert ckpt.load_train_state(path).step == 6
    assert not list(run.path.glob(".step_*"))  # no temporaries left


def test_text_pointer_when_symlinks_fail(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    run, _ = ckpt.prepare_run_dir(spec)

    def no_symlink(*a, **k):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(os, "symlink", no_symlink)
    path = _save(run, spec, 3)
    latest = run.path / "step_latest"
    assert latest.is_file() and not latest.is_symlink() and latest.read_text().strip() == "step_3"
    assert run.latest() == path


def test_a_crashed_save_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    run, _ = ckpt.prepare_run_dir(spec)
    _save(run, spec, 1)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        _save(run, spec, 2)
    monkeypatch.undo()
    assert run.steps() == [1] and run.latest() == run.step_dir(1)
    assert not list(run.path.glob(".step_*"))


def test_rng_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = ckpt.rng_state()
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    ckpt.set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]


def test_metrics_after_the_resumed_step_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (5, 10, 15)) + '{"step": 2')
    truncate_metrics(path, 10)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [5, 10]


def test_a_checkpoint_of_format_1_is_read_as_format_2(tmp_path):
    """Checkpoints written before config.json became the single source (their draft rebuilt from a
    draft.toml beside it) still load: the same target and draft sections come back."""
    import tomli_w

    from deepspec_core.assembly import checkpoint_spec
    from deepspec_core.runs import read_checkpoint_config

    spec = _spec(tmp_path, "draft.block_size=5")
    step = tmp_path / "step_3"
    step.mkdir()
    (step / "config.json").write_text(json.dumps({
        "deepspec_version": "0.1.0", "algo": "dflash", "draft": spec.draft.model_dump(mode="json"),
        "target": {"model": "tiny", "path": "/somewhere/tiny", "layer_ids": [0, 1, 2], "mask_token_id": 5,
                   "hidden_size": 256, "vocab_size": 4096}}))
    (step / "draft.toml").write_text(tomli_w.dumps(spec.model_dump(mode="json", include={"target", "draft"},
                                                                   exclude_none=True)))
    config = read_checkpoint_config(step)
    assert (config["target_path"], config["hidden_size"], config["draft_vocab_size"]) == ("/somewhere/tiny", 256, 4096)
    back = checkpoint_spec(step)
    assert back.draft == spec.draft and back.target == spec.target
    (step / "draft.toml").unlink()
    with pytest.raises(CheckpointError, match="format 1"):
        read_checkpoint_config(step)
