"""Reference initialisation: every trainable Linear / Embedding of every draft starts N(0, 0.02)
(HF post_init, as DeepSpec's drafts), biases 0, norms 1; a reduced head starts from the target rows."""

from __future__ import annotations

import pytest
import torch
from draft_helpers import frozen_weights, make_draft
from torch import nn

from deepspec_core.drafts.base import build_vocab_mapping

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("algo", ["eagle3", "dflash", "dspark"])
def test_trainable_weights_start_at_the_references_normal(algo):
    draft = make_draft(algo, num_layers=2, **({"intermediate_size": 512} if algo != "eagle3" else {}))
    weights = [m.weight for m in draft.modules()
               if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.requires_grad]
    # every trainable matrix is one of them: nothing escapes the check below
    assert {id(w) for w in weights} == {id(p) for p in draft.parameters() if p.requires_grad and p.dim() == 2}
    flat = torch.cat([w.detach().flatten() for w in weights])
    assert flat.std().item() == pytest.approx(0.02, rel=0.02) and abs(flat.mean().item()) < 1e-3
    for w in weights:  # each tensor, not only the pool
        assert w.detach().std().item() == pytest.approx(0.02, rel=0.25), w.shape
    for m in draft.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
        if type(m).__name__.endswith("RMSNorm"):
            assert torch.all(m.weight == 1)
    names = {n for n, p in draft.named_parameters() if p.requires_grad}
    if algo == "dspark":  # the Markov head and the confidence head too (the reference initialises them alike)
        assert {"seq_head.embed.weight", "seq_head.proj.weight", "confidence.proj.weight"} <= names


@pytest.mark.parametrize("algo", ["eagle3", "dspark"])
def test_a_reduced_head_starts_from_the_target_rows_and_init_std_0_keeps_torch_defaults(algo):
    draft = make_draft(algo, draft_vocab_size=16)
    draft.set_vocab_mapping(*build_vocab_mapping(torch.arange(128.0), 16))
    _, head = frozen_weights()
    assert torch.equal(draft.draft_head.weight, head[112:])
    plain = make_draft(algo, init_std=0.0)
    layer = next(m for m in plain.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad)
    bound = 1 / layer.in_features**0.5  # kaiming-uniform's bound: std = bound / sqrt(3)
    assert layer.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.15)
