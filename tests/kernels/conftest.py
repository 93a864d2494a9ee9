"""The kernel tests run Triton's interpreter on CPU; the variable is read when ``@triton.jit``
decorates a kernel, so it is set before ``deepspec_kernels.losses`` is first imported. On a GPU
machine, DEEPSPEC_KERNELS_NATIVE=1 runs them compiled on CUDA instead."""

import os

import pytest

NATIVE = os.environ.get("DEEPSPEC_KERNELS_NATIVE") == "1"
if not NATIVE:
    os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton", reason="the kernels need triton (pip install deepspec[kernels])")


@pytest.fixture
def device():
    import torch

    return "cuda" if NATIVE and torch.cuda.is_available() else "cpu"
