"""Behaviour shared by the three algorithms: shapes, frozen weights, overfitting, proposals."""

import pytest
import torch
from draft_helpers import VOCAB, make_batch, make_draft, reference_rows

from deepspec_core.spec import algorithms

pytestmark = pytest.mark.unit

ALGOS = algorithms()


def _train(draft, batch, steps, lr=1e-2, **fw):
    opt = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad], lr=lr)
    first = last = None
    for _ in range(steps):
        out = draft.forward_train(batch, **fw)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = out if first is None else first
        last = out
    return first, last


@pytest.mark.parametrize("algo", ALGOS)
def test_forward_train_shapes_dtypes_and_metrics(algo):
    """The metrics are those of the teacher-forced predictions, recomputed here row by row."""
    from deepspec_core.drafts.base import block_metrics
    from deepspec_core.drafts.dflash import sample_anchors

    torch.manual_seed(0)
    d = make_draft(algo, block_size=4, num_anchors=6) if algo != "eagle3" else make_draft(algo, ttt_length=3)
    batch, fixed = make_batch(), {}
    if algo != "eagle3":
        anchors, keep = sample_anchors(batch.loss_mask, 6, torch.Generator().manual_seed(0))
        fixed = dict(anchors=anchors, keep=keep)
    _train(d, batch, steps=5, **fixed)  # partly trained: some predictions right, some wrong
    out = d.forward_train(batch, **fixed)
    k = 3 if algo == "eagle3" else 4
    assert out.loss.shape == () and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    m = out.metrics
    assert m["acc_per_pos"].shape == (k,) and m["accept_per_pos"].shape == (k,)
    assert all(not v.requires_grad for v in m.values())
    want = block_metrics(*reference_rows(d, batch, fixed.get("anchors"), fixed.get("keep")))
    for name in ("acc_per_pos", "accept_per_pos", "tau_greedy", "tau_expected", "rows", "tokens"):
        assert torch.allclose(m[name], want[name], atol=1e-5), (name, m[name], want[name])
    assert ((0 < m["acc_per_pos"]) & (m["acc_per_pos"] < 1)).all()  # neither all right nor all wrong


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("vocab", [None, 40])
def test_gradients_reach_only_trainable_parameters(algo, vocab):
    kw = {"draft_vocab_size": vocab} | ({"num_anchors": 6} if algo != "eagle3" else {})
    d = make_draft(algo, **kw)
    d.forward_train(make_batch()).loss.backward()
    assert d.embed_tokens.weight.grad is None and d.target_head.weight.grad is None
    trainable = {n: p for n, p in d.named_parameters() if p.requires_grad}
    assert all(p.grad is not None for p in trainable.values()), [n for n, p in trainable.items() if p.grad is None]
    assert trainable["fusion.fc.weight"].grad.abs().sum() > 0
    assert d.layers[0].layer.self_attn.q_proj.weight.grad.abs().sum() > 0
    if vocab:
        assert d.draft_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("algo", ALGOS)
def test_overfits_one_tiny_batch(algo):
    torch.manual_seed(0)
    kw = dict(ttt_length=3) if algo == "eagle3" else dict(block_size=3, num_anchors=16)
    d = make_draft(algo, **kw)
    batch = make_batch(lengths=(20, 14))
    fixed = {}
    if algo != "eagle3":
        from deepspec_core.drafts.dflash import sample_anchors

        anchors, keep = sample_anchors(batch.loss_mask, 16, torch.Generator().manual_seed(0))
        fixed = dict(anchors=anchors, keep=keep)
    first, last = _train(d, batch, steps=150, **fixed)
    assert last.loss.item() < first.loss.item() / 4, (first.loss.item(), last.loss.item())
    assert last.metrics["tau_greedy"] > first.metrics["tau_greedy"]


def test_sample_anchors_respects_the_loss_mask():
    from deepspec_core.drafts.dflash import sample_anchors

    lm = torch.tensor([[0, 0, 1, 1, 1, 0, 1, 1], [0, 1, 0, 1, 0, 1, 0, 0]], dtype=torch.bool)
    anchors, keep = sample_anchors(lm, 8, torch.Generator().manual_seed(0))
    assert anchors.shape == (2, 7)
    got = [sorted(a[k].tolist()) for a, k in zip(anchors, keep, strict=True)]
    assert got == [[2, 3, 6], []]
    few, keep2 = sample_anchors(lm, 2)
    assert keep2[0].all() and set(few[0].tolist()) <= {2, 3, 6} and few[0, 0] < few[0, 1]


def _continue(batch, n, tokens):
    """A one-row batch: the first n+1 tokens of row 0, then ``tokens``; features random beyond n."""
    ids = torch.cat([batch.input_ids[:1, : n + 1], tokens], dim=1)
    t = ids.shape[1]
    aux = torch.cat([batch.aux_hidden[:1, :n], torch.randn(1, t - n, *batch.aux_hidden.shape[2:])], dim=1)
    from deepspec_core.drafts.base import DraftBatch

    return DraftBatch(ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool), aux,
                      torch.randn(1, t, batch.final_hidden.shape[-1]))


@pytest.mark.parametrize("algo,variant", [("eagle3", {}), ("eagle3", {"draft_vocab_size": 40}), ("dflash", {}),
                                          ("dflash", {"predict_from_anchor": False}),
                                          ("dflash", {"draft_vocab_size": 40}), ("dspark", {}),
                                          ("dspark", {"sequential_head": "rnn", "markov_rank": 8}),
                                          ("dspark", {"draft_vocab_size": 40})])
def test_propose_agrees_with_teacher_forced_training(algo, variant):
    torch.manual_seed(0)
    d = make_draft(algo, **variant).eval()
    for p in d.parameters():  # a trained-looking draft: the heads' W2 starts at zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    batch, n, k = make_batch(lengths=(24,)), 10, 3
    d.start(batch.input_ids[:, :n], batch.aux_hidden[:, :n])
    gen = torch.Generator().manual_seed(1)
    prop = d.propose(batch.input_ids[:, n], k, temperature=1.0, generator=gen)
    assert prop.tokens.shape == (1, k) and prop.probs.dtype == torch.float32 and prop.dists.shape == (1, k, VOCAB)
    assert torch.allclose(prop.dists.sum(-1), torch.ones(1, k))
    assert torch.allclose(prop.dists.gather(-1, prop.tokens[..., None])[..., 0], prop.probs)
    tf = _continue(batch, n, prop.tokens)
    logits = d.teacher_forced_logits(tf, torch.tensor([[n]]))[0, 0]  # (k, V): anchor x_n, slot j predicts x_{n+1+j}
    assert torch.allclose(torch.softmax(logits[:k], -1), prop.dists[0], atol=1e-5)
    greedy = d.propose(batch.input_ids[:, n], k, temperature=0.0)
    assert greedy.dists is None and (greedy.probs == 1).all()
    if algo == "dspark":  # the confidence head sees what it sees in training: slot states and previous tokens
        with torch.no_grad():
            hidden = d.block_hidden(tf, torch.tensor([[n]]))  # (1, 1, γ, H)
            slots = (n + torch.arange(hidden.shape[2])).clamp(max=tf.input_ids.shape[1] - 1)
            prev = tf.input_ids[:, slots][:, None]  # x_{a+k−1}: the anchor, then the drafted tokens
            want = torch.sigmoid(d.confidence_logits(hidden, prev))[0, 0, :k]
        assert prop.confidences.shape == (1, k) and torch.allclose(prop.confidences[0], want, atol=1e-5)
    if variant.get("draft_vocab_size"):
        assert d.t2d[prop.tokens].all() and (prop.dists[0][:, ~d.t2d] == 0).all()


@pytest.mark.parametrize("algo", ALGOS)
def test_commit_matches_a_fresh_start(algo):
    """Ingesting in rounds gives the same proposals as ingesting everything at once."""
    d = make_draft(algo).eval()
    batch = make_batch(lengths=(24,))
    ids, aux = batch.input_ids, batch.aux_hidden
    d.start(ids[:, :8], aux[:, :8])
    d.propose(ids[:, 8], 3)  # scratch work must not leak into the state
    d.commit(ids[:, 8:11], aux[:, 8:11])
    d.commit(ids[:, 11:12], aux[:, 11:12])
    a = d.propose(ids[:, 12], 3, temperature=1.0, generator=torch.Generator().manual_seed(0))
    d.start(ids[:, :12], aux[:, :12])
    b = d.propose(ids[:, 12], 3, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.tokens, b.tokens) and torch.allclose(a.dists, b.dists, atol=1e-5)


@pytest.mark.parametrize("algo", ["dflash", "dspark"])
def test_block_ce_with_a_reduced_vocabulary_matches_a_reference(algo):
    """CE over the draft vocabulary; labels outside it leave the weighted mean (they cannot be drafted)."""
    from deepspec_core.drafts.base import build_vocab_mapping
    from deepspec_core.drafts.dflash import sample_anchors
    from deepspec_core.losses import position_weights

    torch.manual_seed(0)
    d = make_draft(algo, draft_vocab_size=60, block_size=3, num_anchors=8)
    counts = torch.rand(VOCAB)
    d.set_vocab_mapping(*build_vocab_mapping(counts, 60))
    for p in d.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    batch = make_batch(lengths=(24, 17))
    anchors, keep = sample_anchors(batch.loss_mask, 8, torch.Generator().manual_seed(0))
    out = d.forward_train(batch, anchors=anchors, keep=keep)
    logp = torch.log_softmax(d.block_logits(batch, anchors), -1)  # (B, N, γ, V), −inf off the draft vocabulary
    ids, t = batch.input_ids, batch.input_ids.shape[1]
    pos = anchors[..., None] + torch.arange(1, 4)
    labels = ids.gather(1, pos.clamp(max=t - 1).view(2, -1)).view_as(pos)
    sup = batch.loss_mask.gather(1, pos.clamp(max=t - 1).view(2, -1)).view_as(pos) & (pos < batch.lengths[:, None, None])
    valid = torch.cumprod((sup & keep[..., None]).long(), -1).bool()
    inside = d.t2d[labels]
    assert (valid & ~inside).any() and (valid & inside).any()  # both kinds of label occur
    w = position_weights(3, d.spec.loss_decay) * (valid & inside)
    nll = -logp.gather(-1, labels[..., None])[..., 0].masked_fill(~inside, 0.0)
    assert torch.allclose(out.metrics["ce"], (nll * w).sum() / w.sum(), atol=1e-5)


def test_eagle3_loss_with_a_reduced_vocabulary_matches_a_reference():
    """Soft-CE per TTT step against the target restricted to the draft ids, step i at t against the
    target distribution at t+1+i; a mean over supervised positions, weighted by step_decay**i."""
    from deepspec_core.drafts.base import build_vocab_mapping
    from deepspec_core.losses import soft_cross_entropy

    torch.manual_seed(0)
    d = make_draft("eagle3", draft_vocab_size=50, ttt_length=3)
    assert d.spec.loss_convention == "valid_rows"  # the default, decided by measurement
    d.set_vocab_mapping(*build_vocab_mapping(torch.rand(VOCAB), 50))
    for p in d.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    batch = make_batch(lengths=(24, 17))
    out = d.forward_train(batch)
    q = d.ttt_logits(batch)[..., d.draft_ids]  # (B, T, S, Vd)
    p_all = batch.final_hidden @ d.target_head.weight.T  # (B, T, V)
    lengths, t, want = batch.lengths, batch.input_ids.shape[1], 0.0
    for i in range(3):
        nll, n = 0.0, 0
        for bi in range(2):
            for pos in range(t):
                ok = all(pos + 2 + j < lengths[bi] and batch.loss_mask[bi, pos + 2 + j] for j in range(i + 1))
                if ok:
                    nll += soft_cross_entropy(q[bi, pos, i][None], p_all[bi, pos + 1 + i, d.draft_ids][None]).item()
                    n += 1
        want += 0.8**i * nll / n
    assert out.loss.item() == pytest.approx(want, rel=1e-4)


def test_eagle3_reference_loss_convention_matches_a_literal_transcription():
    """DeepSpec's Eagle3 loss (SpecForge's convention): step i at position t counts where
    loss_mask[t+i] is set (the sequence's last token has no target), its soft CE against the
    target at t+1+i summed and divided by B·T — padding and prompt included; weight 0.8**i."""
    from deepspec_core.losses import soft_cross_entropy

    torch.manual_seed(0)
    d = make_draft("eagle3", ttt_length=3, loss_convention="reference")
    for p in d.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    batch = make_batch(lengths=(24, 17))
    out = d.forward_train(batch)
    q = d.ttt_logits(batch)  # (B, T, S, V)
    p_all = batch.final_hidden @ d.target_head.weight.T  # (B, T, V)
    b, t = batch.input_ids.shape
    want = 0.0
    for i in range(3):
        total = 0.0
        for bi in range(b):
            n = int(batch.lengths[bi])
            for pos in range(t):
                if pos + i < n - 1 and batch.loss_mask[bi, pos + i]:
                    total += soft_cross_entropy(q[bi, pos, i][None], p_all[bi, pos + 1 + i][None]).item()
        want += 0.8**i * total / (b * t)
    assert out.loss.item() == pytest.approx(want, rel=1e-4)
    other = make_draft("eagle3", ttt_length=3, loss_convention="valid_rows")
    other.load_state_dict(d.state_dict())
    assert other.forward_train(batch).loss.item() != pytest.approx(out.loss.item(), rel=1e-2)


@pytest.mark.parametrize("algo", ALGOS)
def test_recomputation_in_backward_is_chosen_by_the_memory_budget(algo):
    """Same loss and gradients whether the vocabulary work is kept or recomputed; kept costs fewer
    FLOPs (Eagle3: the target's view once per batch, not once per TTT step and again in backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = make_batch()
    runs = []
    for budget in (0, 1 << 30):
        d = make_draft(algo)
        d.loss_memory_budget = budget
        torch.manual_seed(0)  # the block drafters sample their anchors
        with FlopCounterMode(display=False) as fc:
            out = d.forward_train(batch)
            out.loss.backward()
        grads = {n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None}
        runs.append((out.loss.detach(), grads, fc.get_total_flops()))
    (l0, g0, f0), (l1, g1, f1) = runs
    assert torch.allclose(l0, l1, atol=1e-6) and g0.keys() == g1.keys()
    assert all(torch.allclose(g0[n], g1[n], atol=1e-6) for n in g0)
    assert f1 < f0


def _flex_vs_dense(algo: str, device: str, grads: bool):
    batch = make_batch().to(device)
    runs = []
    for backend in ("sdpa", "flex"):
        d = make_draft(algo).to(device)
        d.use_attention(backend)
        torch.manual_seed(0)  # the block drafters sample their anchors
        with torch.set_grad_enabled(grads):
            out = d.forward_train(batch)
        if grads:
            out.loss.backward()
        g = {n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None}
        d.eval()
        with torch.no_grad():
            d.start(batch.input_ids[:1, :12], batch.aux_hidden[:1, :12])
            prop = d.propose(batch.input_ids[:1, 12], 3, temperature=1.0,
                             generator=torch.Generator(device).manual_seed(0))
        runs.append((out.loss.detach(), out.metrics, g, prop))
    (l0, m0, g0, p0), (l1, m1, g1, p1) = runs
    assert torch.allclose(l0, l1, atol=1e-5)
    assert all(torch.allclose(m0[k], m1[k], atol=1e-5) for k in m0)
    assert g0.keys() == g1.keys() and all(torch.allclose(g0[n], g1[n], atol=1e-5, rtol=1e-4) for n in g0)
    assert torch.equal(p0.tokens, p1.tokens) and torch.allclose(p0.dists, p1.dists, atol=1e-5)


@pytest.mark.parametrize("algo", ALGOS)
def test_flex_attention_equals_dense_attention_on_every_algorithms_masks(algo):
    """train.attention = flex runs each draft's real masks (Eagle3's TTT steps, the block drafters'
    context + block) as flex-attention block masks: the same loss, metrics and proposals as dense
    SDPA. On CPU flex runs eagerly and has no backward: gradients are compared on CUDA (below)."""
    _flex_vs_dense(algo, "cpu", grads=False)
    with pytest.raises(ValueError, match="unknown attention backend"):
        make_draft(algo).use_attention("xformers")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention's backward needs CUDA (scripts/gpu_check.sh)")
@pytest.mark.parametrize("algo", ALGOS)
def test_flex_attention_gradients_equal_dense_ones_on_cuda(algo):
    _flex_vs_dense(algo, "cuda", grads=True)
