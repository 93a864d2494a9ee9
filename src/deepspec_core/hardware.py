"""What this machine computes fast: the one place that decides where bf16 pays off on a CPU.

bf16 is only fast on CPUs that multiply it natively (AMX tiles or AVX512-BF16). Elsewhere (AVX2
only, e.g. many AMD EPYC and older Xeon hosts) PyTorch and vLLM convert to fp32 and back inside
every matmul, so bf16 is *slower* than fp32 for products of many rows (training, batched serving);
at decoding's few rows, which are bound by reading weights, it still pays. Measured on SmolLM2-135M (docs/hardware.md): with
native bf16 a bf16 matmul at decoding's few rows was 3-6x faster than fp32 and a training step
1.5-1.6x faster; on an AVX2-only CPU bf16 made vLLM regeneration 3.2x and a training step 12.5x
slower than fp32.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles)."""
    import torch  # here, not at import: the CLI imports this module and must start without torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def fast_dtype_name() -> str:
    """"bfloat16" where this CPU has native bf16, else "float32": the dtype to serve or run a
    target in on this CPU when speed matters more than bit-identity with an fp32 run."""
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def available_memory_bytes(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory this process can still take: Linux's MemAvailable (free plus reclaimable page cache),
    lowered to what a cgroup v2 limit leaves (containers); elsewhere the free physical pages; None
    where the OS says neither."""
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, max(int(limit) - int((cgroup / "memory.current").read_text()), 0))
    except (OSError, ValueError):
        pass
    return free


if __name__ == "__main__":  # for shell scripts: python -m deepspec_core.hardware
    print(fast_dtype_name())
