"""deepspec_core.hardware: the one place that says whether this CPU computes bf16 natively, as run
by the shell (examples/smollm2/run.sh picks vLLM's dtype and the training precision from it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from deepspec_core import hardware

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("avx512_bf16", "amx", "want"), [
    (False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16"), (True, True, "bfloat16"),
])
def test_bf16_is_the_fast_dtype_only_where_the_cpu_multiplies_it_natively(monkeypatch, avx512_bf16, amx, want):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert hardware.cpu_has_fast_bf16() == (want == "bfloat16")
    assert hardware.fast_dtype_name() == want


def test_the_shell_entry_point_prints_this_machines_dtype_and_nothing_else():
    out = subprocess.run([sys.executable, "-m", "deepspec_core.hardware"], capture_output=True, text=True, check=True)
    assert out.stdout == hardware.fast_dtype_name() + "\n"


def test_available_memory_is_bytes_between_nothing_and_the_physical_memory():
    import os

    free = hardware.available_memory_bytes()
    if sys.platform.startswith("linux"):
        assert free is not None
    if free is not None:
        assert 0 <= free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_a_container_memory_limit_caps_the_available_memory(tmp_path):
    (tmp_path / "memory.max").write_text("3000000\n")
    (tmp_path / "memory.current").write_text("1000000\n")
    free = hardware.available_memory_bytes(cgroup=tmp_path)
    assert free is not None and free <= 2_000_000
    (tmp_path / "memory.max").write_text("max\n")  # no limit: the machine's own figure
    assert hardware.available_memory_bytes(cgroup=tmp_path) == hardware.available_memory_bytes(cgroup=tmp_path / "none")
