"""oneDNN-packed linear layers: the values of F.linear, row for row those of a one-token step, and
F.linear again wherever the packed copy would be wrong (gradients, a changed or cast weight)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepspec_core.decode import cpu_linear
from deepspec_core.decode.cpu_linear import is_packed, pack_linears, packing_available

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN")]


def _layer(out_f: int, in_f: int, bias: bool, seed: int) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(seed)
    plain = nn.Linear(in_f, out_f, bias=bias)
    packed = nn.Linear(in_f, out_f, bias=bias)
    packed.load_state_dict(plain.state_dict())
    assert pack_linears(packed) == 1
    return plain, packed


@pytest.mark.parametrize("seed", range(12))
def test_a_packed_layer_computes_f_linear_and_each_row_as_a_one_row_step(seed):
    """Generated shapes: the packed product equals F.linear to fp32 rounding, and row r of a
    many-row product equals the product of row r alone bit for bit (what lets a verification
    score each position exactly as a decoding step would)."""
    g = torch.Generator().manual_seed(seed)
    out_f, in_f, rows = (int(torch.randint(lo, hi, (), generator=g)) for lo, hi in ((1, 700), (1, 700), (2, 13)))
    plain, packed = _layer(out_f, in_f, bias=seed % 2 == 0, seed=seed)
    x = torch.randn(1, rows, in_f, generator=g)
    with torch.no_grad():
        got, want = packed(x), plain(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * in_f**0.5)
        for r in range(rows):
            assert torch.equal(packed(x[:, r : r + 1]), got[:, r : r + 1]), (out_f, in_f, rows, r)


def test_pack_linears_packs_fp32_cpu_layers_once_and_leaves_the_rest():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4).bfloat16(), nn.Embedding(10, 8))
    assert not is_packed(model)
    assert pack_linears(model) == 1  # the bf16 layer and the embedding are left alone
    assert is_packed(model)
    assert pack_linears(model) == 1  # again: the same layer repacked, nothing else
    assert "_deepspec_packed" not in "".join(model.state_dict())  # checkpoints and exports are unchanged


def test_nothing_is_packed_when_the_copy_would_not_fit():
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))  # 128 + 64 weights of 4 bytes
    assert pack_linears(model, max_bytes=767) == 0 and not is_packed(model)
    assert pack_linears(model, max_bytes=768) == 2
    other = nn.Linear(4, 4)  # the budget covers every model of one call together
    assert pack_linears(nn.Linear(8, 16), other, max_bytes=8 * 16 * 4) == 0


def test_a_weight_shared_by_two_models_is_packed_once():
    head = nn.Linear(8, 32, bias=False)
    copy = nn.Linear(8, 32, bias=False)
    copy.weight = nn.Parameter(head.weight.detach(), requires_grad=False)  # a draft's frozen target head
    assert pack_linears(head, copy) == 2
    assert getattr(head, cpu_linear.PACKED)[0] is getattr(copy, cpu_linear.PACKED)[0]
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(head(x), copy(x))


def test_autocast_is_honoured_by_a_packed_layer():
    plain, packed = _layer(6, 5, bias=True, seed=2)
    x = torch.randn(2, 5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert packed(x).dtype == plain(x).dtype == torch.bfloat16


def test_packing_unavailable_packs_nothing(monkeypatch):
    monkeypatch.setattr(cpu_linear, "packing_available", lambda: False)
    model = nn.Linear(8, 4)
    assert pack_linears(model) == 0
    assert not is_packed(model)


def test_gradients_flow_through_a_packed_layer_as_through_f_linear():
    plain, packed = _layer(6, 5, bias=True, seed=0)
    x = torch.randn(3, 5)
    packed(x).square().sum().backward()
    plain(x).square().sum().backward()
    torch.testing.assert_close(packed.weight.grad, plain.weight.grad)
    torch.testing.assert_close(packed.bias.grad, plain.bias.grad)


def test_a_weight_changed_cast_or_replaced_after_packing_is_the_one_used():
    plain, packed = _layer(6, 5, bias=False, seed=1)
    x = torch.randn(2, 5)
    with torch.no_grad():
        packed.weight.mul_(2.0)  # in place, e.g. load_state_dict
        torch.testing.assert_close(packed(x), 2.0 * plain(x))
        packed.weight = nn.Parameter(torch.zeros(6, 5))  # replaced
        assert torch.equal(packed(x), torch.zeros(2, 6))
        packed.to(torch.float64)  # cast: the packed fp32 copy no longer applies
        assert packed(x.double()).dtype == torch.float64
