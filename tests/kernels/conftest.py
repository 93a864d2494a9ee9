"""The kernel tests run Triton's interpreter on CPU (``TRITON_INTERPRET=1``, set by the root
conftest before collection, since triton reads it when it decorates a function). On a GPU machine,
DEEPSPEC_KERNELS_NATIVE=1 runs them compiled on CUDA instead."""

import os

import pytest

NATIVE = os.environ.get("DEEPSPEC_KERNELS_NATIVE") == "1"

pytest.importorskip("triton", reason="the kernels need triton (pip install deepspec[kernels])")


@pytest.fixture
def device():
    import torch

    return "cuda" if NATIVE and torch.cuda.is_available() else "cpu"
