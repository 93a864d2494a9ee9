"""Run directories as written by training and read by evaluation and export: where the checkpoints
are, which is the newest, and the trainable weights of one. (Writing them — atomic saves,
retention, resume — is ``deepspec_core.train.checkpoint``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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



def load_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = step_dir / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {step_dir} has no model.safetensors", "pass --fresh to start over")
    return load_file(str(path))
