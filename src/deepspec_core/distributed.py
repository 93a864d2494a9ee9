"""Processes: detect an existing launcher's environment and set up torch.distributed — shared by
training and evaluation (which split work over processes the same way).

Any launcher that sets ``RANK``/``WORLD_SIZE`` works: ``torchrun``, ``accelerate launch``, or SLURM
(``srun``, read from ``SLURM_PROCID``/``SLURM_NTASKS``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # none | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[03-05,07],cpu1`` (no ``scontrol`` needed)."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        return nodelist
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def detect_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Rank and world size from torchrun / accelerate (RANK, WORLD_SIZE) or SLURM (SLURM_PROCID …).

    For SLURM, MASTER_ADDR/MASTER_PORT are filled in (first host of the allocation, a port derived
    from the job id) when the job script did not export them, so ``srun deepspec train …`` works.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in env:
        # Only srun job steps: a plain sbatch script also has SLURM_PROCID but is one process.
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", 0))
        env.setdefault("MASTER_ADDR", _first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")))
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        env.setdefault("RANK", str(rank))
        env.setdefault("WORLD_SIZE", str(world))
        env.setdefault("LOCAL_RANK", str(local))
        return DistEnv(rank, world, local, "slurm")
    return DistEnv()


def explicit_device(device: str) -> torch.device:
    """A ``--device`` the user named (not "auto"), checked against what this torch can use.

    Raises SpecError for a string that is no device, or a CUDA device this machine does not have."""
    from deepspec_core.errors import SpecError

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise SpecError(f"--device {device!r} is not a device", "use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "no CUDA device is visible" if torch.version.cuda else f"this torch ({torch.__version__}) is a CPU build"
            raise SpecError(f"--device {device}: {why}", "use --device cpu (or auto, which picks the GPU where there is one)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpecError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible",
                            f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    return dev


def pick_device(env: DistEnv, device: str = "auto") -> torch.device:
    if device != "auto":
        return explicit_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(env: DistEnv, device: torch.device) -> bool:
    """Join the process group (NCCL on GPUs, gloo on CPU); False (nothing done) for one process or one already joined."""
    import torch.distributed as dist

    if not env.distributed or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, timeout=timedelta(minutes=30))
    return True


def shutdown_distributed(*, synchronize: bool = True) -> None:
    """Leave the process group cleanly, so that no rank dies at exit.

    First collect garbage: FSDP2's hooks keep the wrapped draft (and the work handles of its last
    collectives) alive in reference cycles, and if those are freed only at interpreter shutdown,
    gloo's worker threads outlive the group and the process aborts ("terminate called without an
    active exception"). Then, at a normal end (``synchronize``), wait at a barrier, so no rank tears
    its connections down while another still has a collective in flight. After an error the other
    ranks may be gone, so the barrier is skipped.
    """
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def leaving_process_group(joined: bool = True) -> Iterator[None]:
    """Around the work of a process that ``joined`` a group: leave it at the end, through the
    barrier after success and without it after an error (KeyboardInterrupt included)."""
    try:
        yield
    except BaseException:
        if joined:
            shutdown_distributed(synchronize=False)
        raise
    if joined:
        shutdown_distributed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
