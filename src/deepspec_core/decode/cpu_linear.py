"""Decoding-sized fp32 matmuls on a CPU: the weight streamed once, whatever the number of rows.

Decoding runs the target on 1 token (a step) or k + 1 tokens (a verification); both are bound by
reading the weights, so a verification should cost about one step. Two mechanisms, the first
preferred:

- :func:`pack_linears` gives every fp32 ``nn.Linear`` of a model a copy of its weight in oneDNN's
  blocked layout (``torch.ops.mkldnn``, present in the x86 and aarch64 CPU builds of torch) and
  computes through it. Measured on SmolLM2-135M's 210 decoder matmuls, 2 cores, AVX2 only
  (benchmarks/round_cost.py gives the whole-round view): 1 row 25.9 ms against 35.6 ms for
  ``F.linear``, 6 rows 34.7 against 73.2 ms (59.2 with :class:`FewRowLinear`); its 49,152 × 576
  lm_head 4.9 / 6.8 ms for 1 / 6 rows against 9.6 / 25.0. Row r of a many-row product equals the
  one-row product bit for bit, so a verification scores each position exactly as a step would.
  Both decoders use the packed model: the target-only baseline is never the slower of the two.
- :class:`FewRowLinear`, where packing is unavailable: a verification's ``F.linear`` calls with
  2–8 rows are computed as W·xᵀ — the weight as the left operand — so the GEMM does not repack the
  whole weight per call. Measured on SmolLM2-135M (2 cores, AVX-512): a 6-token forward cost
  1.35× a 1-token step (82.8 against 61.5 ms); written as W·xᵀ, 1.1× (68 ms).

Both compute the same values as ``F.linear`` up to fp32 rounding (another summation order, as any
other GEMM kernel); greedy speculative decoding stays token-identical to target-only decoding
(tests/decode, and on SmolLM2 in tests/targets/test_smollm2.py).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

PACKED = "_deepspec_packed"  # the attribute holding (packed weight, data_ptr, _version) of a packed nn.Linear
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


# -- oneDNN-packed weights ---------------------------------------------------------------------


def packing_available() -> bool:
    """Whether this torch build can pack linear weights for oneDNN (its CPU builds for x86 and aarch64)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    packed, ptr, version = getattr(self, PACKED)
    w = self.weight
    # The packed copy is only valid for the weight it was made from, and has no backward nor
    # autocast: anything else (a weight changed in place, replaced, moved or cast, a forward that
    # needs gradients, an autocast region) takes F.linear.
    stale = w._version != version or w.data_ptr() != ptr or w.device.type != "cpu" or w.dtype != torch.float32
    needs_grad = torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)
    if stale or needs_grad or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return F.linear(x, w, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")


def pack_linears(*models: nn.Module, max_bytes: int | None = None) -> int:
    """Compute every fp32 CPU ``nn.Linear`` of ``models`` through a oneDNN-packed copy of its weight.

    For decoding (under ``torch.no_grad``): costs one more copy of those weights in memory, made
    once per weight even where layers (of one model or several, e.g. a draft's frozen copy of the
    target's lm_head) share it; nothing is packed when the copies would exceed ``max_bytes``.
    Packing takes ~0.25 s per 28 M parameters. Idempotent; returns the number of layers packed (0
    where :func:`packing_available` is false or nothing is fp32 on a CPU). Forwards that need
    gradients or run under autocast, and weights changed in place or replaced after packing, fall
    back to ``F.linear`` on their own; a change through ``weight.data`` is not seen (repack after it).
    """
    if not packing_available():
        return 0
    layers = [m for model in models for m in model.modules()
              if isinstance(m, nn.Linear) and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]
    weights = {(m.weight.data_ptr(), m.weight.shape): m.weight for m in layers}
    if max_bytes is not None and sum(w.nbytes for w in weights.values()) > max_bytes:
        return 0
    with torch.no_grad():
        packed = {key: torch.ops.mkldnn._reorder_linear_weight(w.detach(), None) for key, w in weights.items()}
    for m in layers:
        w = m.weight
        setattr(m, PACKED, (packed[(w.data_ptr(), w.shape)], w.data_ptr(), w._version))
        m.forward = types.MethodType(_packed_forward, m)  # type: ignore[method-assign]
    return len(layers)


def is_packed(model: nn.Module) -> bool:
    """Whether :func:`pack_linears` packed at least one layer of ``model``."""
    return any(hasattr(m, PACKED) for m in model.modules())
