"""How many of a round's drafted tokens to verify: fixed k, a confidence threshold, or DSpark's
prefix scheduler at batch size 1. Every policy only *shortens* the chain, so decoding stays
lossless; a round may verify no drafted token at all (the target then yields one token).

Confidences are per drafted slot: DSpark's confidence head c_j ≈ P(slot j accepted | slots < j
accepted), after sequential temperature scaling when the checkpoint is calibrated; for Eagle3 and
DFlash the draft's own probability of the token it drafted (softmax at T = 1).

- ``fixed``: verify all k (the reference's default).
- ``threshold``: verify up to the first slot whose confidence is below the threshold — DeepSpec's
  ``--confidence-threshold`` (``eval/dspark/draft_ops.py``: a per-slot test, not a cumulative one).
- ``scheduler``: Algorithm 1 of the DSpark paper for one request: with a_j = Π_{i≤j} c_i, admit
  slot j while the expected throughput (1 + Σ_{i≤j} a_i)·SPS(1 + j) exceeds the value without it,
  and stop at the first slot that does not raise it. SPS(B) is the target's verification
  forwards per second with B tokens, profiled on this machine (:func:`profile_sps`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeGuard

import torch

PolicyName = Literal["fixed", "threshold", "scheduler"]
POLICIES: tuple[str, ...] = ("fixed", "threshold", "scheduler")


def is_policy(name: str) -> TypeGuard[PolicyName]:
    """Whether ``name`` is one of :data:`POLICIES`."""
    return name in POLICIES


@dataclass(frozen=True)
class DraftLength:
    """A draft-length policy (see the module docstring). ``sps[B - 1]`` = SPS(B), B = 1..k+1."""

    name: PolicyName = "fixed"
    threshold: float = 0.5
    sps: tuple[float, ...] | None = None
    temperatures: tuple[float, ...] | None = None  # STS, one per slot (decode/schedule.py), when calibrated

    def length(self, confidences: Sequence[float]) -> int:
        """Slots to verify (0..len) given the raw per-slot confidences of the drafted tokens, in
        order (calibrated here with ``temperatures`` when given).

        Prefix-consistent: the length for a prefix of the slots is min(its length, the length for
        all of them), so a draft may stop drafting as soon as a slot is refused.
        """
        k = len(confidences)
        if self.temperatures is not None:
            confidences = [_scaled(c, self.temperatures[j]) for j, c in enumerate(confidences)]
        if self.name == "fixed":
            return k
        if self.name == "threshold":
            return next((j for j, c in enumerate(confidences) if c < self.threshold), k)
        if self.sps is None or len(self.sps) < k + 1:
            raise ValueError(f"the scheduler needs SPS(B) for B = 1..{k + 1}; profile it with profile_sps")
        survive, tau, best = 1.0, 1.0, self.sps[0]
        for j, c in enumerate(confidences, start=1):
            survive *= c
            gain = (tau + survive) * self.sps[j]
            if gain <= best:  # the first admission that does not raise τ*·SPS(B) ends the schedule
                return j - 1
            tau, best = tau + survive, gain
        return k

    def calibrated(self, temperatures: Sequence[float] | None) -> DraftLength:
        return replace(self, temperatures=None if temperatures is None else tuple(temperatures))

    def describe(self) -> str:
        if self.name == "threshold":
            return f"threshold {self.threshold:g}"
        return self.name


def _scaled(c: float, temperature: float) -> float:
    """σ(logit(c) / T), as :func:`deepspec_core.decode.schedule.scale` (scalar, no tensor)."""
    c = min(max(c, 1e-6), 1 - 1e-6)
    return 1.0 / (1.0 + math.exp(-math.log(c / (1 - c)) / temperature))


@torch.no_grad()
def profile_sps(model: Any, max_tokens: int, context: int = 256, repeats: int = 5) -> tuple[float, ...]:
    """SPS(B) for B = 1..max_tokens: verification forwards per second of the target reading B new
    tokens after a KV cache of ``context`` tokens (median of ``repeats`` timings, after a warm-up)."""
    from deepspec_core.decode.kvcache import crop_cache, new_cache
    from deepspec_core.targets.hf import capture_features

    device = next(model.parameters()).device
    vocab = int(model.get_input_embeddings().weight.shape[0])
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (1, context), generator=gen).to(device)
    cache = new_cache(model)
    capture_features(model, prompt, past_key_values=cache, use_cache=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = []
    for b in range(1, max_tokens + 1):
        block = torch.randint(0, vocab, (1, b), generator=gen).to(device)
        times = []
        for r in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            capture_features(model, block, past_key_values=cache, use_cache=True)
            sync()
            if r:  # the first is a warm-up
                times.append(time.perf_counter() - t0)
            crop_cache(cache, b)
        out.append(1.0 / sorted(times)[len(times) // 2])
    # More tokens are never verified faster: timing noise must not make the scheduler admit a slot
    # for a speed it does not have.
    return tuple(min(out[: i + 1]) for i in range(len(out)))
