"""Processes: detect an existing launcher's environment, set up torch.distributed, launch N processes.

``deepspec train --gpus N`` re-runs the same command under ``accelerate launch`` (one process per
GPU, multi-node arguments passed through); each child sees ``RANK``/``WORLD_SIZE`` and trains
in-process. Any launcher that sets those variables works the same way: ``torchrun``,
``accelerate launch``, or SLURM (``srun``, read from ``SLURM_PROCID``/``SLURM_NTASKS``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from deepspec_core.errors import SpecError


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


def pick_device(env: DistEnv, device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
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


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(
    cli_args: list[str],
    gpus: int,
    nodes: int = 1,
    node_rank: int = 0,
    main_addr: str | None = None,
    main_port: int | None = None,
) -> list[str]:
    """The ``accelerate launch`` command that runs ``deepspec <cli_args>`` once per GPU on this node.

    Mixed precision and compilation stay off in accelerate: the training loop does its own bf16
    autocast, and the spec — not the launcher — decides it. On a machine without GPUs the same
    command runs ``gpus`` CPU processes with gloo (docs/reference.md: ``--cpu`` would run only one).
    """
    if gpus < 1 or nodes < 1:
        raise SpecError(f"--gpus ({gpus}) and --nodes ({nodes}) must be at least 1")
    if not 0 <= node_rank < nodes:
        raise SpecError(f"--node-rank {node_rank} must be in 0..{nodes - 1}", "number nodes from 0")
    if nodes > 1 and not main_addr:
        raise SpecError("--nodes > 1 needs --main-addr", "give the address of the node with --node-rank 0")
    # The launcher of this interpreter, so the children run the same environment as the parent.
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += [
        "--multi_gpu",
        "--num_processes", str(gpus * nodes),
        "--num_machines", str(nodes),
        "--machine_rank", str(node_rank),
        "--main_process_ip", main_addr or "127.0.0.1",
        "--main_process_port", str(main_port or (29500 if nodes > 1 else free_port())),
        "--mixed_precision", "no",
        "--dynamo_backend", "no",
        "-m", "deepspec_cli.main",
        *cli_args,
    ]  # fmt: skip
    return cmd


class StopRequest:
    """SIGTERM / SIGUSR1 (preemption) or a first Ctrl-C: finish the step, checkpoint, stop. A second Ctrl-C aborts."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.requested, self._old = say, False, {}
        self.signal: str | None = None  # the first signal received

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signal.Signals(signum).name
        self.say(
            f"{signal.Signals(signum).name}: stopping after this step with a checkpoint (Ctrl-C again aborts)"
        )

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def agreed(self, env: DistEnv, device: torch.device) -> bool:
        """Whether any process was asked to stop (every process must stop at the same step)."""
        if not env.distributed:
            return self.requested
        import torch.distributed as dist

        flag = torch.tensor([float(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
