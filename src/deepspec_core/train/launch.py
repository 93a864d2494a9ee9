"""Launching N training processes, and stopping them on request.

``deepspec train --gpus N`` re-runs the same command under ``accelerate launch`` (one process per
GPU, multi-node arguments passed through); each child sees ``RANK``/``WORLD_SIZE`` and trains
in-process (``deepspec_core.distributed`` reads them). SIGTERM / SIGUSR1 / a first Ctrl-C ask for
a checkpoint and a clean stop (:class:`StopRequest`).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch

from deepspec_core.distributed import DistEnv, free_port
from deepspec_core.errors import SpecError


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


_Handler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal returns


class StopRequest:
    """SIGTERM / SIGUSR1 (preemption) or a first Ctrl-C: finish the step, checkpoint, stop. A second Ctrl-C aborts."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.requested = say, False
        self._old: dict[signal.Signals, _Handler] = {}  # the handlers replaced, restored on exit
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
