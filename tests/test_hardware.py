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
