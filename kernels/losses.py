"""Fused vocabulary losses in Triton: one program per row, the vocabulary streamed in blocks, only
per-row scalars kept between forward and backward.

Twins of the eager functions in ``deepspec_core.losses`` (same values and gradients, tested under
Triton's interpreter on CPU and natively on a GPU):

- :func:`soft_cross_entropy` — Eagle3's −Σ_v p(v) log q(v), p = softmax(target logits) over the
  same columns (the draft vocabulary when reduced); gradient softmax(q) − p.
- :func:`ce_and_tv` — the block drafters' terms of one pass: −log q(label) and
  TV = 1 − Σ_v min(q(v), p(v)) with p normalised over the *full* target vocabulary (its logsumexp
  passed in), so TV counts the target mass the draft vocabulary cannot reach. DSpark's confidence
  target is 1 − TV. Gradient of TV with S = Σ_{v: q<p} q(v): q_j·(S − [q_j < p_j]).

The eager path materialises log-softmaxes and softmaxes of every row as fp32 (rows × V) tensors
and keeps them for backward; these kernels keep the input logits (which the caller has anyway)
and 2–3 fp32 scalars per row, and recompute the rest in one streaming backward pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # vocabulary columns per step of a row's loop


@triton.jit
def _soft_ce_fwd(q_ptr, p_ptr, loss_ptr, lse_q_ptr, lse_p_ptr, stride_q, stride_p, V, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    q_row, p_row = q_ptr + row * stride_q, p_ptr + row * stride_p
    m_q, s_q = -float("inf"), 0.0
    m_p, s_p, dot = -float("inf"), 0.0, 0.0  # dot = Σ exp(p − m_p)·q, rescaled with m_p
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < V
        q = tl.load(q_row + offs, mask=valid, other=-float("inf")).to(tl.float32)
        p = tl.load(p_row + offs, mask=valid, other=-float("inf")).to(tl.float32)
        new_q = tl.maximum(m_q, tl.max(q, 0))
        s_q = s_q * tl.exp(m_q - new_q) + tl.sum(tl.exp(q - new_q), 0)
        m_q = new_q
        new_p = tl.maximum(m_p, tl.max(p, 0))
        scale = tl.exp(m_p - new_p)
        w = tl.exp(p - new_p)
        s_p = s_p * scale + tl.sum(w, 0)
        dot = dot * scale + tl.sum(w * tl.where(valid, q, 0.0), 0)  # w is 0 off the row: no 0·(−inf)
        m_p = new_p
    lse_q = m_q + tl.log(s_q)
    tl.store(loss_ptr + row, lse_q - dot / s_p)  # −Σ p log q = lse_q − Σ p·q
    tl.store(lse_q_ptr + row, lse_q)
    tl.store(lse_p_ptr + row, m_p + tl.log(s_p))


@triton.jit
def _soft_ce_bwd(q_ptr, p_ptr, g_ptr, lse_q_ptr, lse_p_ptr, dq_ptr, stride_q, stride_p, stride_dq, V,
                 BLOCK: tl.constexpr):
    row = tl.program_id(0)
    g, lse_q, lse_p = tl.load(g_ptr + row), tl.load(lse_q_ptr + row), tl.load(lse_p_ptr + row)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < V
        q = tl.load(q_ptr + row * stride_q + offs, mask=valid, other=0.0).to(tl.float32)
        p = tl.load(p_ptr + row * stride_p + offs, mask=valid, other=0.0).to(tl.float32)
        grad = g * (tl.exp(q - lse_q) - tl.exp(p - lse_p))
        tl.store(dq_ptr + row * stride_dq + offs, grad.to(dq_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _ce_tv_fwd(q_ptr, p_ptr, lse_full_ptr, label_ptr, ce_ptr, tv_ptr, lse_q_ptr, s_ptr, stride_q, stride_p, V,
               BLOCK: tl.constexpr):
    row = tl.program_id(0)
    q_row, p_row = q_ptr + row * stride_q, p_ptr + row * stride_p
    m_q, s_q = -float("inf"), 0.0
    for start in range(0, V, BLOCK):  # pass 1: the draft's logsumexp
        offs = start + tl.arange(0, BLOCK)
        q = tl.load(q_row + offs, mask=offs < V, other=-float("inf")).to(tl.float32)
        new_q = tl.maximum(m_q, tl.max(q, 0))
        s_q = s_q * tl.exp(m_q - new_q) + tl.sum(tl.exp(q - new_q), 0)
        m_q = new_q
    lse_q = m_q + tl.log(s_q)
    lse_p = tl.load(lse_full_ptr + row)
    overlap, below = 0.0, 0.0  # Σ min(q, p) and S = Σ_{q<p} q
    for start in range(0, V, BLOCK):  # pass 2: overlap with the target
        offs = start + tl.arange(0, BLOCK)
        valid = offs < V
        q = tl.exp(tl.load(q_row + offs, mask=valid, other=-float("inf")).to(tl.float32) - lse_q)
        p = tl.exp(tl.load(p_row + offs, mask=valid, other=-float("inf")).to(tl.float32) - lse_p)
        overlap += tl.sum(tl.minimum(q, p), 0)
        below += tl.sum(tl.where(q < p, q, 0.0), 0)
    label = tl.load(label_ptr + row)
    picked = tl.load(q_row + tl.maximum(label, 0)).to(tl.float32)
    tl.store(ce_ptr + row, tl.where(label >= 0, lse_q - picked, 0.0))
    tl.store(tv_ptr + row, 1.0 - overlap)
    tl.store(lse_q_ptr + row, lse_q)
    tl.store(s_ptr + row, below)


@triton.jit
def _ce_tv_bwd(q_ptr, p_ptr, lse_full_ptr, label_ptr, g_ce_ptr, g_tv_ptr, lse_q_ptr, s_ptr, dq_ptr,
               stride_q, stride_p, stride_dq, V, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    label = tl.load(label_ptr + row)
    g_ce = tl.where(label >= 0, tl.load(g_ce_ptr + row), 0.0)
    g_tv, lse_q, below = tl.load(g_tv_ptr + row), tl.load(lse_q_ptr + row), tl.load(s_ptr + row)
    lse_p = tl.load(lse_full_ptr + row)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < V
        q = tl.exp(tl.load(q_ptr + row * stride_q + offs, mask=valid, other=0.0).to(tl.float32) - lse_q)
        p = tl.exp(tl.load(p_ptr + row * stride_p + offs, mask=valid, other=0.0).to(tl.float32) - lse_p)
        grad = g_ce * (q - tl.where(offs == label, 1.0, 0.0)) + g_tv * q * (below - tl.where(q < p, 1.0, 0.0))
        tl.store(dq_ptr + row * stride_dq + offs, grad.to(dq_ptr.dtype.element_ty), mask=valid)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class _SoftCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
        q, p = _rows(q_logits), _rows(p_logits.detach())
        n, v = q.shape
        loss, lse_q, lse_p = (torch.empty(n, dtype=torch.float32, device=q.device) for _ in range(3))
        if n:
            _soft_ce_fwd[(n,)](q, p, loss, lse_q, lse_p, q.stride(0), p.stride(0), v, BLOCK=BLOCK)
        ctx.save_for_backward(q, p, lse_q, lse_p)
        return loss

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        q, p, lse_q, lse_p = ctx.saved_tensors
        dq = torch.empty_like(q)
        n, v = q.shape
        if n:
            _soft_ce_bwd[(n,)](q, p, g.contiguous().float(), lse_q, lse_p, dq, q.stride(0), p.stride(0),
                               dq.stride(0), v, BLOCK=BLOCK)
        return dq, None


class _CeTv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_logits, p_logits, lse_full, labels):
        q, p = _rows(q_logits), _rows(p_logits.detach())
        n, v = q.shape
        lse_full = lse_full.detach().float().contiguous()
        labels = labels.long().contiguous()
        ce, tv, lse_q, below = (torch.empty(n, dtype=torch.float32, device=q.device) for _ in range(4))
        if n:
            _ce_tv_fwd[(n,)](q, p, lse_full, labels, ce, tv, lse_q, below, q.stride(0), p.stride(0), v, BLOCK=BLOCK)
        ctx.save_for_backward(q, p, lse_full, labels, lse_q, below)
        return ce, tv

    @staticmethod
    def backward(ctx, g_ce, g_tv):
        q, p, lse_full, labels, lse_q, below = ctx.saved_tensors
        n, v = q.shape
        zeros = torch.zeros(n, dtype=torch.float32, device=q.device)
        g_ce = zeros if g_ce is None else g_ce.contiguous().float()
        g_tv = zeros if g_tv is None else g_tv.contiguous().float()
        dq = torch.empty_like(q)
        if n:
            _ce_tv_bwd[(n,)](q, p, lse_full, labels, g_ce, g_tv, lse_q, below, dq, q.stride(0), p.stride(0),
                             dq.stride(0), v, BLOCK=BLOCK)
        return dq, None, None, None


def soft_cross_entropy(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """−Σ p log q per row, p = softmax(p_logits) (not differentiated). (N, V), (N, V) → (N,) fp32."""
    return _SoftCE.apply(q_logits, p_logits)


def ce_and_tv(
    q_logits: torch.Tensor, p_logits: torch.Tensor, lse_full: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(−log q(label), 1 − Σ min(q, p)) per row. q = softmax(q_logits (N, V)); p = exp(p_logits −
    lse_full) with ``lse_full`` (N,) the target's logsumexp over its whole vocabulary; labels (N,)
    in q's columns, −100 = ignore (CE 0). → two (N,) fp32 tensors; the gradient flows to q_logits."""
    return _CeTv.apply(q_logits, p_logits, lse_full, labels)
