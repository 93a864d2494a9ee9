"""What each prediction may see: no future leakage, the Markov head's dependence, DSpark ⊃ DFlash."""

import pytest
import torch
from draft_helpers import make_batch, make_draft, reference_rows

from deepspec_core.drafts.base import DraftBatch

pytestmark = pytest.mark.unit


def _perturb(batch: DraftBatch, feat_from: int, tok_from: int) -> DraftBatch:
    ids, aux = batch.input_ids.clone(), batch.aux_hidden.clone()
    ids[:, tok_from:] = (ids[:, tok_from:] + 7) % 120
    aux[:, feat_from:] += torch.randn_like(aux[:, feat_from:])
    return DraftBatch(ids, batch.attention_mask, batch.loss_mask, aux, batch.final_hidden)


def _randomise(draft):
    for p in draft.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    return draft


def test_eagle3_no_future_leakage():
    torch.manual_seed(0)
    d = _randomise(make_draft("eagle3", ttt_length=3)).eval()
    batch, c = make_batch(lengths=(20, 20)), 9
    base = d.ttt_logits(batch)  # (B, T, S, V)
    # features at ≥ c and tokens at ≥ c+1 change: step i at t reads x_{t+1..t+1+i} and h_{≤t}
    moved = d.ttt_logits(_perturb(batch, feat_from=c, tok_from=c + 1))
    for i in range(3):
        assert torch.allclose(base[:, : c - i, i], moved[:, : c - i, i], atol=1e-5), i
        assert not torch.allclose(base[:, c - i, i], moved[:, c - i, i], atol=1e-3), i  # the test can fail


@pytest.mark.parametrize("variant", [{}, {"predict_from_anchor": False}])
def test_dflash_block_sees_nothing_at_or_after_its_anchor(variant):
    torch.manual_seed(0)
    d = _randomise(make_draft("dflash", block_size=4, **variant)).eval()
    batch = make_batch(lengths=(20, 20))
    anchors = torch.tensor([[3, 9, 14], [5, 9, 12]])
    base = d.block_logits(batch, anchors)
    moved = d.block_logits(_perturb(batch, feat_from=9, tok_from=10), anchors)
    assert torch.allclose(base[:, :2], moved[:, :2], atol=1e-5)  # anchors ≤ 9: context < anchor, tokens ≤ anchor unchanged
    assert not torch.allclose(base[:, 2], moved[:, 2], atol=1e-3)
    # the anchor token itself is an input of its block
    moved = d.block_logits(_perturb(batch, feat_from=20, tok_from=9), anchors)
    assert torch.allclose(base[:, 0], moved[:, 0], atol=1e-5) and not torch.allclose(base[:, 1], moved[:, 1], atol=1e-3)


def test_dspark_backbone_sees_nothing_at_or_after_its_anchor():
    torch.manual_seed(0)
    d = _randomise(make_draft("dspark", block_size=4)).eval()
    batch = make_batch(lengths=(20,))
    anchors = torch.tensor([[4, 9]])
    with torch.no_grad():
        base = d.block_hidden(batch, anchors)
        moved = d.block_hidden(_perturb(batch, feat_from=9, tok_from=10), anchors)
    assert torch.allclose(base, moved, atol=1e-5)


@pytest.mark.parametrize("head", ["markov", "rnn"])
def test_sequential_head_slot_k_depends_on_the_previous_token(head):
    torch.manual_seed(0)
    d = _randomise(make_draft("dspark", block_size=4, sequential_head=head, markov_rank=8)).eval()
    batch, a = make_batch(lengths=(20,)), 6
    base = d.block_logits(batch, torch.tensor([[a]]))[0, 0]  # (γ, V); slot k predicts x_{a+k}
    for j in range(1, 4):  # change x_{a+j}: the previous token of slot j+1
        moved = d.block_logits(_perturb(batch, feat_from=20, tok_from=a + j), torch.tensor([[a]]))[0, 0]
        moved_one = batch.input_ids.clone()
        moved_one[0, a + j] = (moved_one[0, a + j] + 7) % 120
        one = d.block_logits(DraftBatch(moved_one, batch.attention_mask, batch.loss_mask, batch.aux_hidden,
                                        batch.final_hidden), torch.tensor([[a]]))[0, 0]
        assert torch.allclose(base[:j], moved[:j], atol=1e-5)  # slots before it never see it
        assert not torch.allclose(base[j], one[j], atol=1e-3)  # slot j+1 (index j) does
        if head == "markov":  # only x_{k−1} matters: later slots ignore x_{a+j}
            assert torch.allclose(base[j + 1 :], one[j + 1 :], atol=1e-5)


def test_dspark_without_heads_equals_dflash():
    torch.manual_seed(0)
    kw = dict(block_size=4, num_anchors=8, num_layers=2)
    dflash = _randomise(make_draft("dflash", **kw))
    dspark = make_draft("dspark", markov_rank=0, confidence_head=False, ce_weight=1.0, tv_weight=0.0, **kw)
    dspark.load_trainable_state_dict(dflash.trainable_state_dict())
    batch = make_batch()
    anchors = torch.tensor([[6, 8, 10, 15], [5, 7, 9, 12]])
    a, b = dflash.forward_train(batch, anchors=anchors), dspark.forward_train(batch, anchors=anchors)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    assert torch.allclose(a.metrics["tau_expected"], b.metrics["tau_expected"])
    for d in (dflash, dspark):
        d.eval().start(batch.input_ids[:1, :9], batch.aux_hidden[:1, :9])
    pa = dflash.propose(batch.input_ids[:1, 9], 4, 1.0, torch.Generator().manual_seed(0))
    pb = dspark.propose(batch.input_ids[:1, 9], 4, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(pa.tokens, pb.tokens) and torch.allclose(pa.dists, pb.dists)


def test_dspark_loss_terms_and_weights():
    torch.manual_seed(0)
    d = make_draft("dspark", block_size=4, num_anchors=8)
    batch, anchors = make_batch(), torch.tensor([[6, 8, 10], [5, 7, 9]])
    out = d.forward_train(batch, anchors=anchors)
    m = out.metrics
    expected = 0.1 * m["ce"] + 0.9 * m["l1"] + 1.0 * m["bce"]
    assert torch.allclose(out.loss.detach(), expected, atol=1e-5)
    # The confidence error: σ(confidence logit) against the slot's expected acceptance 1 − TV,
    # over the supervised slots, recomputed from the teacher-forced block.
    _, accept, valid = reference_rows(d, batch, anchors)
    with torch.no_grad():
        hidden = d.block_hidden(batch, anchors)  # (B, N, γ, H)
        slots = (anchors[..., None] + torch.arange(4)).clamp(max=batch.input_ids.shape[1] - 1)
        prev = batch.input_ids.gather(1, slots.view(2, -1)).view_as(slots)  # x_{a+k−1}
        err = (torch.sigmoid(d.confidence_logits(hidden, prev)).reshape(-1, 4) - accept)[valid]
    assert torch.allclose(m["conf_abs_error"], err.abs().mean(), atol=1e-5)
    assert torch.allclose(m["conf_bias"], err.mean(), atol=1e-5)
