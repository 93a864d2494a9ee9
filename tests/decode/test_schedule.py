"""STS calibration recovers a known miscalibration; the prefix scheduler follows Algorithm 1."""

from __future__ import annotations

import pytest
import torch

from deepspec_core.decode.schedule import (
    apply_sts,
    cumulative_ece,
    ece,
    fit_sts,
    prefix_schedule,
    scale,
)

pytestmark = pytest.mark.unit


def _rounds(n: int, k: int, seed: int = 0):
    """True per-slot acceptance probabilities, rounds accepted sequentially, and an overconfident head."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, k, generator=g, dtype=torch.float64) * 0.8 + 0.1  # (N, k)
    hit = torch.rand(n, k, generator=g, dtype=torch.float64) < p
    accepted = hit.long().cumprod(1).sum(1)  # (N,) leading run of accepted slots
    temps = [0.5, 0.4, 0.6, 2.0]  # T < 1 sharpens: the raw head is overconfident at slots 1-3
    raw = torch.stack([scale(p[:, j], temps[j]) for j in range(k)], 1)
    return p, raw, accepted, temps


def test_ece_is_zero_when_calibrated_and_large_when_not():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(200_000, generator=g, dtype=torch.float64)
    label = (torch.rand(200_000, generator=g, dtype=torch.float64) < pred).double()
    assert ece(pred, label) < 0.005
    assert ece(torch.full_like(pred, 0.9), label) == pytest.approx(0.4, abs=0.01)


def test_sts_recovers_the_temperatures_and_calibrates_the_cumulative_product():
    p, raw, accepted, temps = _rounds(40_000, 4)
    fitted = fit_sts(raw, accepted)
    before = cumulative_ece(raw, accepted)
    after = cumulative_ece(apply_sts(raw, fitted), accepted)
    assert max(before) > 0.05 and max(after) < 0.015
    # Undoing a scale by T needs 1/T. Late positions' products are small, where ECE is a weak
    # signal of the temperature, so only the first three are pinned down.
    assert fitted[:3] == pytest.approx([1 / t for t in temps[:3]], rel=0.15)


def test_scheduler_admits_everything_when_verification_is_free():
    conf = torch.tensor([[0.9, 0.8, 0.5], [0.3, 0.9, 0.9]])
    assert prefix_schedule(conf, lambda b: 100.0) == [3, 3]


def test_scheduler_admits_the_most_likely_prefixes_and_stops_at_the_first_non_improvement():
    conf = torch.tensor([[0.9, 0.9, 0.9], [0.5, 0.9, 0.9]])
    # a: r0 = .9 .81 .729, r1 = .5 .45 .405. Steps/s fall with the token batch B (R = 2 anchors).
    sps = {2: 10.0, 3: 9.0, 4: 8.0, 5: 7.5, 6: 7.0, 7: 1.0, 8: 100.0}
    # admit (0,1): 2.9·9 = 26.1 > 20; (0,2): 3.71·8 = 29.7; (0,3): 4.44·7.5 = 33.3;
    # (1,1): 4.94·7 = 34.6; (1,2): 5.39·1 = 5.4 → stop, although B = 8 would pay off.
    assert prefix_schedule(conf, lambda b: sps[b]) == [3, 1]


def test_scheduler_keeps_only_anchors_when_drafts_do_not_pay():
    conf = torch.tensor([[0.1, 0.1], [0.05, 0.5]])
    assert prefix_schedule(conf, lambda b: 10.0 / b) == [0, 0]
