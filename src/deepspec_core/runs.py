"""Run directories as written by training and read by evaluation and export: where the checkpoints
are, which is the newest, the trainable weights of one and its ``config.json``. (Writing them —
atomic saves, retention, resume — is ``deepspec_core.train.checkpoint``.)

A checkpoint's ``config.json`` is Hugging Face style and the single source for rebuilding the
draft: ``architectures`` / ``model_type`` name the draft class, ``draft`` holds the draft's spec
section (its ``algo`` picks the class), ``target`` the target's spec section (model, layers, mask
token, template) plus the sizes the draft was built for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepspec_core.errors import CheckpointError

STEP_RE = re.compile(r"^step_(\d+)$")
LATEST = "step_latest"


@dataclass
class RunDir:
    path: Path

    @property
    def spec_path(self) -> Path:
        return self.path / "spec.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def step_dir(self, step: int) -> Path:
        return self.path / f"step_{step}"

    def steps(self) -> list[int]:
        if not self.path.is_dir():
            return []
        return sorted(
            int(m.group(1)) for p in self.path.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))
        )

    def latest(self) -> Path | None:
        """The newest complete checkpoint: what ``step_latest`` names, else the highest ``step_<N>``."""
        link = self.path / LATEST
        if link.is_symlink() or link.is_dir():
            target = link.resolve()
            if target.is_dir():
                return target
        elif link.is_file():
            target = self.path / link.read_text().strip()
            if target.is_dir():
                return target
        steps = self.steps()
        return self.step_dir(steps[-1]) if steps else None

    def has_run(self) -> bool:
        return self.spec_path.is_file()


def resolve_checkpoint(path: Path | str) -> tuple[Path, Path | None]:
    """A run directory (→ its latest checkpoint) or a step directory → (step dir, run dir or None)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(
            f"draft checkpoint {p} does not exist", "pass a run directory or one of its step_<N> directories"
        )
    if not p.is_dir():
        raise CheckpointError(f"draft checkpoint {p} is a file", "pass the run directory or step_<N> directory holding it")
    if (p / "model.safetensors").is_file():
        run = p.parent if (p.parent / "spec.toml").is_file() else None
        return p, run
    latest = RunDir(p).latest()
    if latest is None or not (latest / "model.safetensors").is_file():
        raise CheckpointError(
            f"{p} holds no checkpoint (no step_<N>/model.safetensors)",
            "train first, or pass a step directory",
        )
    return latest, p


CONFIG_FORMAT = 2  # 1: config.json informational, the draft rebuilt from a draft.toml beside it


def checkpoint_config(spec: Any, draft: Any, target_path: str) -> dict[str, Any]:
    """``config.json`` of a checkpoint of ``draft`` (a DraftModel) trained under ``spec`` (a RunSpec)."""
    from deepspec_core import __version__

    return {
        "architectures": [type(draft).__name__],
        "model_type": f"deepspec_{spec.draft.algo}",
        "deepspec_config_format": CONFIG_FORMAT,
        "deepspec_version": __version__,
        "draft": spec.draft.model_dump(mode="json", exclude_none=True),
        "target": spec.target.model_dump(mode="json", exclude_none=True),
        "target_path": target_path,
        "hidden_size": draft.hidden_size,
        "vocab_size": draft.vocab_size,
        "draft_vocab_size": draft.draft_vocab_size,
        "trainable_parameters": draft.num_trainable_parameters(),
    }


def _from_format_1(old: dict[str, Any], draft_toml: Path) -> dict[str, Any]:
    """A checkpoint of format 1 (its draft rebuilt from draft.toml), read as format 2."""
    from deepspec_core.spec import tomllib  # tomli on Python 3.10

    sections = tomllib.loads(draft_toml.read_text())
    target = old.get("target", {})
    return {
        "deepspec_config_format": CONFIG_FORMAT,
        "draft": sections["draft"],
        "target": sections["target"],
        "target_path": target.get("path", sections["target"]["model"]),
        "hidden_size": target.get("hidden_size"),
        "vocab_size": target.get("vocab_size"),
        "draft_vocab_size": (old.get("draft") or {}).get("draft_vocab_size") or target.get("vocab_size"),
    }


def read_checkpoint_config(step_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint. Raises CheckpointError when it is missing, unreadable,
    or of an older format."""
    path = step_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {step_dir} has no config.json", "was it written by `deepspec train`?")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})", "the checkpoint is damaged: use another step") from None
    if config.get("deepspec_config_format") is None and (step_dir / "draft.toml").is_file():
        config = _from_format_1(config, step_dir / "draft.toml")
    if config.get("deepspec_config_format") != CONFIG_FORMAT:
        raise CheckpointError(
            f"{path} is of checkpoint format {config.get('deepspec_config_format', 1)}; this deepspec reads "
            f"format {CONFIG_FORMAT}",
            "retrain with this deepspec version, or evaluate with the version that wrote it",
        )
    return config



def load_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = step_dir / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {step_dir} has no model.safetensors", "pass --fresh to start over")
    return load_file(str(path))
