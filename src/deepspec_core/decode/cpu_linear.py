"""Verification-sized fp32 matmuls on a CPU, computed so that k + 1 rows cost about one row.

A verification runs the target on k + 1 tokens. On a CPU, fp32 ``F.linear`` with 2–8 rows goes to a
GEMM that repacks the whole (out, in) weight on every call; for a model whose weights do not fit in
cache that is the dominant cost. Measured on SmolLM2-135M (2 cores, AVX-512): a 6-token forward cost
1.35× a 1-token step (82.8 against 61.5 ms) and its 49,152 × 576 lm_head alone 24 ms against 10 ms
for one row. Written as W·xᵀ — the weight as the left operand — the weight is streamed once: the
6-token forward then costs 1.1× a step (68 ms).

Outside a CPU, fp32, 2–8 rows or plain tensors, :class:`FewRowLinear` changes nothing. The values
equal ``F.linear``'s to fp32 rounding (another summation order, as any other GEMM kernel); greedy
speculative decoding stays token-identical to target-only decoding (tests/decode, and on SmolLM2 in
tests/targets/test_smollm2.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

MAX_ROWS = 8  # beyond ~12 rows the GEMM's packing pays for itself (measured: parity at 12–16)


def few_row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """``F.linear(x, weight, bias)`` as W·xᵀ for 2..MAX_ROWS fp32 rows on a CPU; None where it does not apply."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.dim() != 2:
        return None
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not 2 <= rows <= MAX_ROWS:
        return None
    y = torch.mm(weight, x.reshape(rows, x.shape[-1]).T).T.contiguous()  # (R, out)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


class FewRowLinear(TorchFunctionMode):
    """``with FewRowLinear(): model(block)`` — every ``F.linear`` inside uses :func:`few_row_linear`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            out = few_row_linear(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)
