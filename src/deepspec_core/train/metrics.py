"""What a training run records: ``metrics.jsonl``, TensorBoard, wandb (its live progress goes
through ``deepspec_core.progress``; the CLI draws it).

Only the main process logs. ``metrics.jsonl`` has one JSON object per logging step
(``{"step", "kind": "train" | "val", "time", ...metrics}``); on resume, records after the resumed
step are dropped so that the file describes exactly one history.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepspec_core.io import atomic_write_text
from deepspec_core.spec import RunSpec

COUNT_KEYS = ("rows", "tokens")  # summed, not averaged


def metrics_of(out: Any) -> dict[str, Any]:
    """A DraftLoss → plain floats and lists (loss, per-position acceptance, τ estimates, counts)."""
    m: dict[str, Any] = {"loss": float(out.loss.detach())}
    for k, v in out.metrics.items():
        v = v.detach().float().cpu() if torch.is_tensor(v) else torch.as_tensor(v, dtype=torch.float32)
        m[k] = v.tolist() if v.ndim else float(v)
    return m


def pooled_metrics(records: list[dict[str, Any]], env: Any = None, device: Any = "cpu") -> dict[str, Any]:
    """Mean of each metric over ``records`` weighted by their supervised ``rows``, pooled over all
    processes; ``rows`` and ``tokens`` are summed. Independent of how records were split over processes."""
    if not records:
        return {}
    keys = [k for k in records[0] if k not in COUNT_KEYS]
    w = torch.tensor([float(r.get("rows", 1.0)) for r in records], dtype=torch.float64)
    chunks = [
        (
            w[:, None]
            * torch.tensor([r[k] if isinstance(r[k], list) else [r[k]] for r in records], dtype=torch.float64)
        ).sum(0)
        for k in keys
    ]
    counts = torch.tensor(
        [w.sum().item()] + [sum(float(r.get(c, 0.0)) for r in records) for c in COUNT_KEYS],
        dtype=torch.float64,
    )
    buf = torch.cat([*chunks, counts])
    if env is not None and env.distributed:
        import torch.distributed as dist

        buf = buf.to(device)
        dist.all_reduce(buf)
        buf = buf.cpu()
    total = buf[-len(COUNT_KEYS) - 1].item()
    out: dict[str, Any] = {}
    i = 0
    for k, chunk in zip(keys, chunks, strict=True):
        vals = (
            buf[i : i + chunk.numel()] / total if total > 0 else buf[i : i + chunk.numel()] * float("nan")
        ).tolist()
        out[k] = vals if isinstance(records[0][k], list) else vals[0]
        i += chunk.numel()
    for j, c in enumerate(COUNT_KEYS):
        if c in records[0]:
            out[c] = buf[-len(COUNT_KEYS) + j].item()
    return out


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Flatten lists (per-position values) to ``name_<k>`` scalars, 1-based as positions are counted."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, (list, tuple)):
            out.update({f"{k}_{i + 1}": float(x) for i, x in enumerate(v)})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop records with ``step > after_step`` (they belong to a history that resume discards)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= after_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class MetricsLogger:
    """Appends to metrics.jsonl and mirrors to TensorBoard / wandb when they are installed and asked for."""

    def __init__(self, run_dir: Path, spec: RunSpec, resume_step: int, say: Callable[[str], None]):
        self.path = run_dir / "metrics.jsonl"
        truncate_metrics(self.path, resume_step)
        self._file = open(self.path, "a")  # noqa: SIM115 — kept open for the whole run
        self._tb = None
        self._wandb = None
        if spec.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:
                say("tensorboard is not installed: logging to metrics.jsonl only (pip install tensorboard)")
        if spec.train.wandb:
            try:
                import wandb

                self._wandb = wandb.init(
                    project=spec.project,
                    name=spec.name,
                    id=f"{spec.project}-{spec.name}".replace("/", "-"),
                    resume="allow",
                    dir=str(run_dir),
                    config=spec.model_dump(mode="json"),
                )
            except ImportError:
                say("train.wandb is set but wandb is not installed (pip install wandb): skipping wandb")
            except Exception as err:  # wandb not logged in, offline, ...: training must not die of it
                say(f"wandb could not start ({type(err).__name__}: {err}): skipping wandb")

    def log(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
        record = {"step": step, "kind": kind, "time": round(time.time(), 3), **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        scalars = _scalars(metrics)
        if self._tb is not None:
            for k, v in scalars.items():
                if math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
