"""Every algorithm's real training loss with the fused kernels equals the eager one — values and
gradients — and `train.fused_losses` is resolved with clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "drafts"))
from draft_helpers import make_batch, make_draft  # noqa: E402

from deepspec_core.errors import SpecError  # noqa: E402
from deepspec_core.train.data import use_fused_losses  # noqa: E402

CASES = [("eagle3", {"ttt_length": 3}), ("eagle3", {"ttt_length": 3, "draft_vocab_size": 40}),
         ("dflash", {"block_size": 4, "num_anchors": 6}), ("dspark", {"block_size": 4, "num_anchors": 6}),
         ("dspark", {"block_size": 4, "num_anchors": 6, "draft_vocab_size": 40})]


@pytest.mark.parametrize(("algo", "kw"), CASES)
def test_fused_and_eager_losses_agree(algo, kw):
    batch = make_batch(lengths=(24, 17))
    results = []
    for fused in (False, True):
        draft = make_draft(algo, **kw)
        draft.fused_losses = fused
        torch.manual_seed(1)  # the same anchors
        out = draft.forward_train(batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in draft.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), grads, {k: v for k, v in out.metrics.items() if v.ndim == 0}))
    (loss_e, grads_e, met_e), (loss_f, grads_f, met_f) = results
    torch.testing.assert_close(loss_f, loss_e, rtol=1e-5, atol=1e-6)
    assert grads_e.keys() == grads_f.keys() and grads_e
    for name in grads_e:
        torch.testing.assert_close(grads_f[name], grads_e[name], rtol=1e-4, atol=1e-6, msg=name)
    for name in met_e:
        torch.testing.assert_close(met_f[name], met_e[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_setting_is_resolved_with_clear_errors(monkeypatch):
    cpu = torch.device("cpu")
    assert not use_fused_losses("auto", cpu) and not use_fused_losses("off", cpu)
    assert use_fused_losses("on", cpu)  # TRITON_INTERPRET=1 in this directory's conftest
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(SpecError, match="runs Triton kernels on CUDA, not on cpu"):
        use_fused_losses("on", cpu)
