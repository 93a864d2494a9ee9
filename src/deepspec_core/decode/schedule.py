"""DSpark's confidence calibration (Sequential Temperature Scaling) and prefix scheduler (Algorithm 1).

The confidence head gives c_k ≈ P(slot k accepted | slots < k accepted), so the cumulative product
a_k = Π_{i≤k} c_i estimates P(at least k drafted tokens survive). STS fits one temperature per
position, in order, on held-out rounds: T_k minimises the expected calibration error (ECE) of
a_k against the observed survival indicator, with T_1..T_{k−1} already fixed. The scheduler then
spends a verification budget across R concurrent requests on the prefixes most likely to survive,
stopping at the first admission that does not raise the expected throughput τ*·SPS(B); that early
stop only shortens drafts, so decoding stays lossless. SPS(B) is the target's verification steps
per second at a token batch of B, profiled once per deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

DEFAULT_GRID = tuple(round(0.25 + 0.05 * i, 2) for i in range(76))  # 0.25 .. 4.0


def ece(pred: torch.Tensor, label: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error of probabilities ``pred`` (N,) against 0/1 outcomes ``label`` (N,),
    equal-width bins: Σ_b (n_b / N)·|mean pred_b − mean label_b|."""
    pred, label = pred.double().flatten(), label.double().flatten()
    if pred.numel() == 0:
        return 0.0
    idx = (pred * bins).long().clamp(0, bins - 1)  # (N,)
    # Per bin, n_b·|mean pred − mean label| = |Σ pred − Σ label|.
    gap = torch.bincount(idx, weights=pred, minlength=bins) - torch.bincount(
        idx, weights=label, minlength=bins
    )
    return float(gap.abs().sum() / pred.numel())


def scale(conf: torch.Tensor, temperature: float) -> torch.Tensor:
    """σ(logit(c) / T): T > 1 softens towards 0.5, T < 1 sharpens."""
    c = conf.double().clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid(torch.logit(c) / temperature)


def apply_sts(conf: torch.Tensor, temperatures: Sequence[float]) -> torch.Tensor:
    """Calibrated per-slot confidences (N, k) from raw ones with one temperature per slot."""
    return torch.stack([scale(conf[:, j], t) for j, t in enumerate(temperatures)], dim=1)


def survival_labels(accepted: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) drafted tokens accepted per round → (N, k) 0/1: at least j tokens survived, j = 1..k."""
    return (accepted[:, None] >= torch.arange(1, k + 1)[None, :]).double()


def fit_sts(
    conf: torch.Tensor, accepted: torch.Tensor, grid: Sequence[float] = DEFAULT_GRID, bins: int = 15
) -> list[float]:
    """Sequential temperature scaling on held-out rounds.

    conf (N, k) raw per-slot confidences of each round's proposal; accepted (N,) drafted tokens
    accepted in that round. Returns T_1..T_k.
    """
    n, k = conf.shape
    labels = survival_labels(accepted, k)  # (N, k)
    temps: list[float] = []
    prefix = torch.ones(n, dtype=torch.float64)
    for j in range(k):
        best = min(grid, key=lambda t: ece(prefix * scale(conf[:, j], t), labels[:, j], bins))
        temps.append(float(best))
        prefix = prefix * scale(conf[:, j], best)
    return temps


def calibration_rounds(generations: Sequence[object]) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out decoding results (``Generation`` with confidences) → conf (N, k), accepted (N,).

    Rounds cut short by EOS or ``max_new_tokens`` are left out: their later positions were never
    judged, so they carry no label there."""
    conf, accepted = [], []
    for g in generations:
        for c, o in zip(g.confidences, g.outcomes, strict=True):  # type: ignore[attr-defined]
            if o.judged == len(c):
                conf.append(c)
                accepted.append(o.accepted)
    if not conf:
        raise ValueError("no complete rounds with confidences to calibrate on")
    return torch.tensor(conf, dtype=torch.float64), torch.tensor(accepted)


def cumulative_ece(conf: torch.Tensor, accepted: torch.Tensor, bins: int = 15) -> list[float]:
    """ECE of Π_{i≤j} c_i against survival, per position j (to report before / after STS)."""
    labels = survival_labels(accepted, conf.shape[1])
    prefix = torch.cumprod(conf.double(), dim=1)
    return [ece(prefix[:, j], labels[:, j], bins) for j in range(conf.shape[1])]


def prefix_schedule(conf: torch.Tensor, sps: Callable[[int], float]) -> list[int]:
    """Algorithm 1: draft lengths ℓ_r per request from calibrated confidences conf (R, k).

    Every request verifies at least its anchor (B starts at R, τ* at R). Candidates (r, j) are
    admitted in order of a_{r,j} = Π_{i≤j} c_{r,i}, descending (ties by position, so each request's
    prefix grows in order); admitting one adds a token to the batch and a_{r,j} to the expected
    accepted tokens. The first admission that does not raise τ*·SPS(B) ends the schedule.
    """
    r, k = conf.shape
    a = torch.cumprod(conf.double(), dim=1)  # (R, k)
    order = sorted(((float(a[i, j]), j, i) for i in range(r) for j in range(k)), key=lambda x: (-x[0], x[1]))
    lengths = [0] * r
    batch, tau = r, float(r)
    best = tau * sps(batch)
    for score, j, i in order:
        if j != lengths[i]:  # a later slot of a request whose earlier slot was not admitted
            continue
        gain = (tau + score) * sps(batch + 1)
        if gain <= best:
            break
        lengths[i], batch, tau, best = j + 1, batch + 1, tau + score, gain
    return lengths
