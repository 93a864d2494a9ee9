"""Decoding tests run thousands of tiny forward passes: one thread each is much faster than
several threads contending for tensors this small (10× on a loaded 2-core machine)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
