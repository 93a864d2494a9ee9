"""Each loss against its naive formula; the chunked driver against an unchunked computation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepspec_core import losses

pytestmark = pytest.mark.unit


def _logits(n=6, v=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=g) * 3, torch.randn(n, v, generator=g) * 3


def test_soft_cross_entropy_matches_the_formula():
    q, p = _logits()
    pp, qq = p.softmax(-1), q.softmax(-1)
    naive = torch.stack([-sum(pp[i, v] * math.log(qq[i, v]) for v in range(11)) for i in range(6)])
    assert torch.allclose(losses.soft_cross_entropy(q, p), naive.float(), atol=1e-5)


def test_cross_entropy_matches_the_formula_and_ignores():
    q, _ = _logits()
    y = torch.tensor([0, 3, 10, -100, 5, 5])
    out = losses.cross_entropy(q, y)
    for i in range(6):
        want = 0.0 if y[i] < 0 else -math.log(q[i].softmax(-1)[y[i]])
        assert out[i].item() == pytest.approx(want, abs=1e-5)


def test_total_variation_is_half_l1_and_one_minus_overlap():
    q, p = _logits()
    tv = losses.total_variation(q, p)
    assert torch.allclose(tv, 0.5 * (q.softmax(-1) - p.softmax(-1)).abs().sum(-1), atol=1e-6)
    assert torch.allclose(tv, 1 - torch.minimum(q.softmax(-1), p.softmax(-1)).sum(-1), atol=1e-6)
    assert losses.total_variation(p, p).abs().max() < 1e-6
    # the extremes: disjoint supports are 1 apart, half-overlapping ones ½
    far = torch.tensor([[60.0, -60.0, -60.0]]), torch.tensor([[-60.0, 60.0, -60.0]])
    assert losses.total_variation(*far).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.tensor([[0.0, 0.0, -60.0]]), torch.tensor([[0.0, -60.0, 0.0]])
    assert losses.total_variation(*half).item() == pytest.approx(0.5, abs=1e-6)


def test_bce_towards_matches_the_formula():
    z, c = torch.tensor([-2.0, 0.0, 3.0]), torch.tensor([0.1, 0.5, 1.0])
    s = torch.sigmoid(z)
    naive = -(c * s.log() + (1 - c) * (1 - s).log())
    assert torch.allclose(losses.bce_towards(z, c), naive, atol=1e-6)


def test_position_and_step_weights():
    assert losses.position_weights(3, 4.0).tolist() == pytest.approx([1.0, math.exp(-0.25), math.exp(-0.5)])
    assert losses.step_weights(3, 0.8).tolist() == pytest.approx([1.0, 0.8, 0.64])
    assert losses.weighted_mean(torch.ones(3), torch.zeros(3)).item() == 0.0


def test_bf16_logits_are_softmaxed_in_fp32():
    q, p = _logits()
    out = losses.soft_cross_entropy(q.bfloat16(), p.bfloat16())
    assert out.dtype == torch.float32
    assert torch.allclose(out, losses.soft_cross_entropy(q.bfloat16().float(), p.bfloat16().float()))


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_vocab_terms_chunked_equals_unchunked(chunk):
    g = torch.Generator().manual_seed(0)
    n, h, v = 10, 8, 32
    w_draft = torch.randn(v, h, generator=g, requires_grad=True)
    w_target = torch.randn(v, h, generator=g)
    x = torch.randn(n, h, generator=g, requires_grad=True)
    th = torch.randn(n, h, generator=g)
    y = torch.randint(0, v, (n,), generator=g)

    def fn(rows):
        return rows @ w_draft.T

    terms = losses.vocab_terms(fn, (x,), th, w_target, labels=y, want=("soft_ce", "ce", "tv", "correct"),
                               grad_terms=("soft_ce", "ce", "tv"), chunk_rows=chunk)
    (terms["soft_ce"].sum() + terms["ce"].sum() + terms["tv"].sum()).backward()
    grads = x.grad.clone(), w_draft.grad.clone()
    x.grad = w_draft.grad = None
    q, p = fn(x), th @ w_target.T
    naive = (losses.soft_cross_entropy(q, p), losses.cross_entropy(q, y), losses.total_variation(q, p))
    sum(t.sum() for t in naive).backward()
    for name, want in zip(("soft_ce", "ce", "tv"), naive, strict=True):
        assert torch.allclose(terms[name], want.detach(), atol=1e-5), name
    assert torch.equal(terms["correct"], (q.argmax(-1) == p.argmax(-1)).float())
    assert torch.allclose(grads[0], x.grad, atol=1e-5) and torch.allclose(grads[1], w_draft.grad, atol=1e-5)


@pytest.mark.parametrize("chunk", [2, 64])
def test_vocab_terms_with_a_reduced_draft_vocabulary(chunk):
    g = torch.Generator().manual_seed(1)
    n, h, v = 5, 8, 20
    ids = torch.tensor([1, 4, 5, 9, 13, 19])
    w_t = torch.randn(v, h, generator=g)
    x, th = torch.randn(n, h, generator=g, requires_grad=True), torch.randn(n, h, generator=g)
    wd = torch.randn(len(ids), h, generator=g)
    y = torch.tensor([0, 3, -100, 5, 2])
    terms = losses.vocab_terms(lambda r: r @ wd.T, (x,), th, w_t, labels=y, draft_ids=ids, chunk_rows=chunk,
                               want=("soft_ce", "ce", "tv", "correct"), grad_terms=("soft_ce", "ce", "tv"))
    sum(terms[t].sum() for t in ("soft_ce", "ce", "tv")).backward()
    grad, x.grad = x.grad.clone(), None
    q_small = (x @ wd.T).softmax(-1)
    q_full = torch.zeros(n, v).index_copy(1, ids, q_small)
    p_full = (th @ w_t.T).softmax(-1)
    naive = (losses.soft_cross_entropy(x @ wd.T, (th @ w_t.T)[:, ids]), losses.cross_entropy(x @ wd.T, y),
             0.5 * (q_full - p_full).abs().sum(-1))
    for name, want in zip(("soft_ce", "ce", "tv"), naive, strict=True):
        assert torch.allclose(terms[name], want.detach(), atol=1e-5), name
    assert torch.equal(terms["correct"], (ids[q_small.argmax(-1)] == p_full.argmax(-1)).float())
    sum(t.sum() for t in naive).backward()
    assert torch.allclose(grad, x.grad, atol=1e-5)


@pytest.mark.parametrize("reduced", [False, True])
def test_the_memory_budget_trades_flops_for_memory_without_changing_values_or_gradients(reduced):
    """Within the budget nothing is computed twice; over it every chunk is recomputed in backward
    (a second pass through both vocabulary matmuls). Same terms and gradients either way."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    n, h, v = 40, 16, 96
    w = torch.randn(v, h, generator=g)
    target_h = torch.randn(n, h, generator=g)
    ids = torch.arange(0, v, 2) if reduced else None
    head = torch.randn(v if ids is None else ids.numel(), h, generator=g)
    runs = {}
    for budget in (0, 1 << 30):
        x = torch.randn(n, h, generator=torch.Generator().manual_seed(1), requires_grad=True)
        with FlopCounterMode(display=False) as fc:
            terms = losses.vocab_terms(lambda a: a @ head.T, (x,), target_h, w, want=("soft_ce", "tv"),
                                       grad_terms=("soft_ce",), draft_ids=ids, chunk_rows=16, memory_budget=budget)
            terms["soft_ce"].sum().backward()
        runs[budget] = (terms, x.grad, fc.get_total_flops())
    (recomputed, g0, f0), (kept, g1, f1) = runs[0], runs[1 << 30]
    for name in ("soft_ce", "tv"):
        assert torch.allclose(recomputed[name], kept[name], atol=1e-6)
    assert torch.allclose(g0, g1, atol=1e-6)
    draft_matmul = 2 * n * h * head.shape[0]
    target_matmul = 2 * n * h * v
    # recomputing repeats the draft's logits, and the target's too unless a reduced view was kept
    assert f0 - f1 == draft_matmul + (0 if reduced else target_matmul)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 700), v=st.integers(8, 300), vd_frac=st.floats(0.05, 1.0), softcap=st.sampled_from([None, 5.0]),
       seed=st.integers(0, 2**16))
def test_a_stored_target_summary_gives_the_same_view(n, v, vd_frac, softcap, seed):
    """target_view from a precomputed target_summary (what a format-2 cache stores) equals the view
    computed from the full-vocabulary product: the draft ids' logits, the logsumexp and the argmax —
    for any row count (across the chunk size), vocabulary, reduced vocabulary and softcap."""
    g = torch.Generator().manual_seed(seed)
    h = 16
    hidden = torch.randn(n, h, generator=g).to(torch.bfloat16)
    weight = torch.randn(v, h, generator=g)
    ids = torch.randperm(v, generator=g)[: max(1, int(v * vd_frac))].sort().values
    summary = losses.target_summary(hidden, weight, softcap)
    assert summary[0].shape == summary[1].shape == (n,)
    want = losses.target_view(hidden, weight, softcap, ids)
    got = losses.target_view(hidden, weight, softcap, ids, summary)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[2], want[2])
    assert got[0].shape == (n, ids.numel())
