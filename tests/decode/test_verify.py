"""The verification rules as pure functions: exact output distribution, and broken rules caught."""

from __future__ import annotations

import pytest
import torch
from spec_doubles import chi_square_pvalue

from deepspec_core.decode.speculative import (
    Verdict,
    _leading_true,
    greedy_verify,
    pick_token,
    rejection_verify,
    sample,
    target_probs,
)

pytestmark = pytest.mark.unit

V, K, N = 12, 3, 200_000


def _dists(seed: int, rows: int, sharp: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(rows, V, generator=g), -1)


def _setup():
    """Context-free p_1..p_{k+1} and q_1..q_k, broadcast over N rows, with drafts sampled from q."""
    p = _dists(1, K + 1, 2.0)  # (K+1, V)
    q = _dists(2, K, 2.0)  # (K, V)
    g = torch.Generator().manual_seed(3)
    drafts = torch.stack(
        [torch.multinomial(q[j], N, replacement=True, generator=g) for j in range(K)], 1
    )  # (N, K)
    return p, q, drafts, g


def _committed(drafts: torch.Tensor, v: Verdict) -> list[torch.Tensor]:
    """Token committed at output positions 1 and 2, and which rows have a second token."""
    n = v.num_accepted
    first = torch.where(n >= 1, drafts[:, 0], v.next_token)
    has_second = n >= 1
    second = torch.where(n >= 2, drafts[:, 1], v.next_token)
    return [first, second[has_second]]


def _pvalues(rule) -> tuple[float, float]:
    p, q, drafts, g = _setup()
    v = rule(drafts, q.expand(N, K, V), p.expand(N, K + 1, V), g)
    first, second = _committed(drafts, v)
    return (
        chi_square_pvalue(torch.bincount(first, minlength=V), p[0]),
        chi_square_pvalue(torch.bincount(second, minlength=V), p[1]),
    )


def test_rejection_sampling_follows_the_target_distribution():
    p1, p2 = _pvalues(rejection_verify)
    assert p1 > 1e-3 and p2 > 1e-3


def _accept_always(drafts, q, p, g):
    k = drafts.shape[1]
    return Verdict(torch.full((drafts.shape[0],), k), sample(p[:, k], g))


def _resample_from_p(drafts, q, p, g):
    """Bug: on rejection resample from p instead of the residual max(p − q, 0)."""
    v = rejection_verify(drafts, q, p, g)
    idx = v.num_accepted[:, None, None].expand(-1, 1, p.shape[-1])
    return Verdict(v.num_accepted, sample(p.gather(1, idx).squeeze(1), g))


def _residual_without_max(drafts, q, p, g):
    """Bug: |p − q| instead of max(p − q, 0) as the residual."""
    b, k = drafts.shape
    v = rejection_verify(drafts, q, p, g)
    q_pad = torch.cat([q, q.new_zeros(b, 1, q.shape[-1])], 1)
    idx = v.num_accepted[:, None, None].expand(-1, 1, p.shape[-1])
    res = (p.gather(1, idx) - q_pad.gather(1, idx)).squeeze(1).abs()
    return Verdict(v.num_accepted, sample(res / res.sum(-1, keepdim=True), g))


@pytest.mark.parametrize("broken", [_accept_always, _resample_from_p, _residual_without_max])
def test_a_broken_rule_fails_the_same_check(broken):
    assert min(_pvalues(broken)) < 1e-6


def test_greedy_verify_accepts_the_matching_prefix_and_appends_the_target_token():
    logits = torch.full((3, K + 1, V), -1.0)
    best = torch.tensor([[4, 5, 6, 7], [4, 5, 6, 7], [4, 5, 6, 7]])
    logits.scatter_(-1, best[..., None], 1.0)
    drafts = torch.tensor([[4, 5, 6], [4, 9, 6], [1, 5, 6]])
    v = greedy_verify(drafts, logits)
    assert v.num_accepted.tolist() == [3, 1, 0]
    assert v.next_token.tolist() == [7, 5, 4]  # bonus when all match, else the target's own token


def test_rejection_with_equal_distributions_accepts_everything():
    p = _dists(5, K + 1, 1.0)
    g = torch.Generator().manual_seed(0)
    drafts = torch.stack([torch.multinomial(p[j], 64, replacement=True, generator=g) for j in range(K)], 1)
    v = rejection_verify(drafts, p[:K].expand(64, K, V), p.expand(64, K + 1, V), g)
    assert (v.num_accepted == K).all()


def test_leading_true_and_target_probs():
    mask = torch.tensor([[True, True, False, True], [False, True, True, True], [True] * 4])
    assert _leading_true(mask).tolist() == [2, 0, 4]
    logits = torch.randn(2, V, dtype=torch.bfloat16)
    probs = target_probs(logits, 0.5)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.softmax(logits.float() * 2, -1))
    assert pick_token(logits, 0.0).tolist() == logits.argmax(-1).tolist()
    with pytest.raises(ValueError):
        target_probs(logits, 0.0)
