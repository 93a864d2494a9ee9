"""Run directories and checkpoints: the ``step_<N>`` layout below, atomic saves, retention, resume.

A run directory holds ``spec.toml`` (the resolved spec), ``step_<N>/`` checkpoints, ``step_latest``
(a symlink, or a one-line text file naming the directory where symlinks are not possible) and
``metrics.jsonl``. A checkpoint is written into a hidden temporary directory and renamed into place,
so a ``step_<N>`` that exists is always complete; a crash mid-save leaves only a temporary
directory, which the next run deletes.

``step_<N>/``::

    config.json          the draft's config: its spec section, the target's, the sizes (deepspec_core.runs);
                         the single source eval and export rebuild the draft from
    model.safetensors    trainable weights only (the frozen target embedding / lm_head are not duplicated)
    training_state/      optimizer.pt, rng_rank<R>.pt, state.json (step, data position, schedule)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepspec_core.errors import CheckpointError
from deepspec_core.runs import LATEST, RunDir
from deepspec_core.spec import RunSpec, load_spec, save_spec

# Fields that may change between a run and its resumption because they do not change what is
# trained: logging, checkpoint cadence, validation cadence (validation runs on its own RNG stream),
# data-loading parallelism, where files live, and the eval stage. Everything else is refused.
RESUMABLE_FIELDS = (
    "train.log_every",
    "train.compile",
    "train.attention",  # the same attention, dense or block-sparse  # the same math (up to float reassociation), compiled or not
    "train.loss_memory_mb",  # the same values and gradients, recomputed in backward or kept
    "train.tensorboard",
    "train.wandb",
    "train.num_workers",
    "train.save_every",
    "train.keep_last",
    "train.val_every",
    "eval.",
    "output.root",
    "cache.path",
    "cache.allow_stale",
    "cache.batch_size",
    "cache.shard_size_mb",
    "data.regen.",
)


@dataclass
class TrainState:
    """Where training stands after ``step`` optimizer steps; enough to continue exactly."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already taken in `epoch`
    samples_seen: int = 0
    tokens_seen: int = 0  # over all processes, counted at each logging step
    skipped_steps: int = 0  # updates skipped for a non-finite gradient
    world_size: int = 1
    total_steps: int = 0


# -- spec comparison ---------------------------------------------------------------------------


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def spec_differences(old: RunSpec, new: RunSpec) -> list[str]:
    """``field: old → new`` for every field that differs and may not change on resume."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUMABLE_FIELDS):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            diffs.append(f"{key}: {a.get(key, '<unset>')!r} → {b.get(key, '<unset>')!r}")
    return diffs


# -- run directory -----------------------------------------------------------------------------


def prepare_run_dir(spec: RunSpec, fresh: bool = False, write: bool = True) -> tuple[RunDir, Path | None]:
    """Check (and on the main process create) the run directory; return it and the checkpoint to resume.

    A run directory whose ``spec.toml`` differs from ``spec`` beyond :data:`RESUMABLE_FIELDS` is
    refused with the differences listed. ``fresh`` deletes the old run first. Only the process with
    ``write=True`` changes files; the others just read.
    """
    run = RunDir(spec.run_dir())
    if fresh:
        if write and run.path.exists():
            shutil.rmtree(run.path)
        if write:
            run.path.mkdir(parents=True, exist_ok=True)
            save_spec(spec, run.spec_path)
        return run, None
    if run.has_run():
        try:
            old = load_spec(run.spec_path)
        except Exception as err:  # a broken spec.toml: say so rather than guess
            raise CheckpointError(
                f"{run.spec_path} cannot be read: {err}", "pass --fresh to start the run over"
            ) from err
        diffs = spec_differences(old, spec)
        if diffs:
            listed = "; ".join(diffs[:8]) + (f"; (+{len(diffs) - 8} more)" if len(diffs) > 8 else "")
            raise CheckpointError(
                f"run {run.path} was started with a different spec: {listed}",
                "pass --fresh to start over, or change `name` to start a separate run",
            )
    elif run.path.is_dir() and any(run.path.iterdir()) and run.steps():
        raise CheckpointError(
            f"{run.path} has checkpoints but no spec.toml",
            "pass --fresh to start over, or pick another run name",
        )
    if write:
        run.path.mkdir(parents=True, exist_ok=True)
        for tmp in run.path.glob(".step_*.tmp*"):  # left by a crash during a save
            shutil.rmtree(tmp, ignore_errors=True)
        save_spec(spec, run.spec_path)  # refresh logging fields that may have changed
    return run, run.latest()


# -- RNG ---------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and python, as tensors and plain values."""
    # legacy=True is numpy's default (its stub's overloads say otherwise): the MT19937 tuple.
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_meta": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, pos, has_gauss, gauss = state["numpy_meta"]
    np.random.set_state((name, state["numpy_key"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- save / load -------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _point_latest(run: RunDir, name: str) -> None:
    link = run.path / LATEST
    tmp = run.path / f".{LATEST}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        # Filesystems without symlinks get a text pointer with the same meaning.
        if link.is_symlink():
            link.unlink()
        tmp.write_text(name + "\n")
        os.replace(tmp, link)


def save_checkpoint(
    run: RunDir,
    state: TrainState,
    weights: dict[str, torch.Tensor],
    config: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
    rng_states: list[dict[str, Any]],
    keep_last: int,
) -> Path:
    """Write ``step_<state.step>`` atomically, point ``step_latest`` at it, apply retention (main process)."""
    from safetensors.torch import save_file

    final = run.step_dir(state.step)
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{state.step}.tmp", dir=run.path))
    try:
        (tmp / "training_state").mkdir()
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "step": str(state.step)})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / "training_state" / "optimizer.pt")
        for rank, rng in enumerate(rng_states):
            torch.save(rng, tmp / "training_state" / f"rng_rank{rank}.pt")
        (tmp / "training_state" / "state.json").write_text(json.dumps(asdict(state), indent=2) + "\n")
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():  # saving the same step again (e.g. the end of a resumed finished run)
            old = run.path / f".step_{state.step}.tmp-old"
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
        _fsync_dir(run.path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _point_latest(run, final.name)
    for step in run.steps()[:-keep_last]:
        if step != state.step:
            shutil.rmtree(run.step_dir(step), ignore_errors=True)
    return final


def load_train_state(step_dir: Path) -> TrainState:
    path = step_dir / "training_state" / "state.json"
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {step_dir} has no training_state/state.json (weights only?)",
            "resume from a checkpoint written by `deepspec train`, or pass --fresh",
        )
    data = json.loads(path.read_text())
    known = {k: v for k, v in data.items() if k in TrainState.__dataclass_fields__}
    return TrainState(**known)


def load_optimizer_state(step_dir: Path) -> dict[str, Any] | None:
    path = step_dir / "training_state" / "optimizer.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def load_rng(step_dir: Path, rank: int) -> bool:
    """Restore this process's RNG streams; False when the checkpoint has none for ``rank``."""
    path = step_dir / "training_state" / f"rng_rank{rank}.pt"
    if not path.is_file():
        return False
    set_rng_state(torch.load(path, map_location="cpu", weights_only=True))
    return True

