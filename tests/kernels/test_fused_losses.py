"""Fused Triton losses against their eager twins in deepspec_core.losses: values and gradients,
fp32 and bf16 logits, rows crossing a block boundary of the vocabulary loop, ignored labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepspec_core import losses as eager

pytestmark = pytest.mark.unit

V = 1500  # > one 1024-column block: the streaming loop and its tail mask are exercised


def _logits(n: int, v: int, seed: int, dtype: torch.dtype, device: str, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, v, generator=g) * scale).to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_soft_cross_entropy_matches_eager(dtype, device):
    from deepspec_kernels.losses import soft_cross_entropy

    q = _logits(37, V, 0, dtype, device).requires_grad_()
    p = _logits(37, V, 1, dtype, device)
    g = torch.rand(37, generator=torch.Generator().manual_seed(2)).to(device)
    got = soft_cross_entropy(q, p)
    (got * g).sum().backward()
    dq, q.grad = q.grad.clone(), None
    want = eager.soft_cross_entropy(q, p)
    (want * g).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-4
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(dq.float(), q.grad.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-5,
                               atol=1e-4 if dtype == torch.bfloat16 else 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ce_and_tv_match_eager_with_a_reduced_vocabulary(dtype, device):
    """Draft logits over Vd = 1500 columns, the target over a full vocabulary of 3000 (its
    logsumexp passed in): TV counts the target mass outside the draft vocabulary."""
    from deepspec_kernels.losses import ce_and_tv

    n = 29
    q = _logits(n, V, 3, dtype, device).requires_grad_()
    full = _logits(n, 2 * V, 4, torch.float32, device)
    ids = torch.randperm(2 * V, generator=torch.Generator().manual_seed(5))[:V].to(device)
    p_d, lse = full[:, ids].to(dtype), torch.logsumexp(full, -1)
    labels = torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(6)).to(device)
    labels[::5] = -100
    w_ce, w_tv = torch.rand(n, device=device), torch.rand(n, device=device)

    ce, tv = ce_and_tv(q, p_d, lse, labels)
    (w_ce * ce + w_tv * tv).sum().backward()
    dq, q.grad = q.grad.clone(), None

    ce_e = eager.cross_entropy(q, labels)
    qs = F.softmax(q.float(), -1)
    tv_e = 1.0 - torch.minimum(qs, torch.exp(p_d.float() - lse[:, None])).sum(-1)
    (w_ce * ce_e + w_tv * tv_e).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 2e-4
    torch.testing.assert_close(ce, ce_e, rtol=tol, atol=tol)
    torch.testing.assert_close(tv, tv_e, rtol=tol, atol=tol)
    assert torch.all(ce[::5] == 0)
    torch.testing.assert_close(dq.float(), q.grad.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-5,
                               atol=1e-4 if dtype == torch.bfloat16 else 1e-6)


def test_only_one_term_may_carry_gradient(device):
    from deepspec_kernels.losses import ce_and_tv

    q = _logits(8, 64, 7, torch.float32, device).requires_grad_()
    p = _logits(8, 64, 8, torch.float32, device)
    labels = torch.arange(8, device=device)
    ce, _ = ce_and_tv(q, p, torch.logsumexp(p, -1), labels)
    ce.sum().backward()
    torch.testing.assert_close(q.grad, F.softmax(q.detach(), -1) - F.one_hot(labels, 64).float())
