"""Pure, unreduced loss functions over the vocabulary, and a chunked driver that bounds memory.

Conventions (all functions):
- rows are independent predictions; every function returns one value per row, no reduction;
- softmaxes run in fp32 whatever the input dtype, so bf16 logits give the same loss as fp32 ones;
- ``total_variation`` is TV = ½‖p − q‖₁ ∈ [0, 1] (so 1 − TV = Σ min(p, q) is the probability that
  rejection sampling accepts a draft token). The DSpark loss term is the L1 form ‖p − q‖₁ = 2·TV,
  as in the paper's loss formula; the drafts say which form they use.

These are the eager reference: the fused Triton kernels of ``deepspec_kernels.losses`` (soft CE;
CE and TV in one pass) match them in values and gradients, and :func:`vocab_terms` uses them when
called with ``fused=True`` (``train.fused_losses``).

Memory against work: at Qwen3-4B shapes a [rows, V] fp32 tensor is 3584 × 151936 × 4 B = 2.18 GB.
:func:`vocab_terms` computes ``chunk_rows`` rows at a time; what the backward needs of them — the
draft's logits and softmax, the target's view — is kept when it fits ``memory_budget`` bytes, and
otherwise recomputed in backward one chunk at a time (``torch.utils.checkpoint``: the forward then
keeps only per-row scalars, at the price of a second pass through the vocabulary matmuls, the
target's included). At small vocabularies everything fits and nothing is computed twice; at 152k
tokens the recomputation is what keeps a step in GPU memory. The target's side is computed without
gradient, once per row, and with a reduced draft vocabulary (Vd ≪ V) only its (rows, Vd) view is kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_ROWS = 512
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes the vocabulary terms may keep for backward (train.loss_memory_mb)


def kept_bytes(rows: int, vocab: int) -> int:
    """What the backward of :func:`vocab_terms` keeps for ``rows`` rows over ``vocab`` columns without
    recomputation: the draft's fp32 logits and softmax and the target's fp32 view."""
    return 3 * 4 * rows * vocab


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """−Σ_v p(v) log q(v) with p = softmax(target_logits), q = softmax(logits). (N, V) → (N,)."""
    logq = F.log_softmax(logits.float(), dim=-1)
    p = F.softmax(target_logits.float(), dim=-1)
    return -(p * logq).sum(-1)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """−log q(target) per row; rows whose target is ``ignore_index`` give 0. (N, V), (N,) → (N,)."""
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="none")


def total_variation(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """½‖softmax(logits) − softmax(target_logits)‖₁ per row, in [0, 1]. (N, V) → (N,)."""
    q = F.softmax(logits.float(), dim=-1)
    p = F.softmax(target_logits.float(), dim=-1)
    return 0.5 * (q - p).abs().sum(-1)


def bce_towards(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of σ(logits) towards a soft target in [0, 1] (not differentiated). (N,) → (N,)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.detach().float().clamp(0, 1), reduction="none")


def position_weights(block: int, decay: float, device: torch.device | str | None = None) -> torch.Tensor:
    """w_k = exp(−(k−1)/decay) for slots k = 1..block (so w_1 = 1). → (block,) fp32."""
    return torch.exp(-torch.arange(block, dtype=torch.float32, device=device) / decay)


def step_weights(steps: int, decay: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Eagle3 training-time-test weights decay**i for steps i = 0..steps−1. → (steps,) fp32."""
    return torch.tensor([decay**i for i in range(steps)], dtype=torch.float32, device=device)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·x / Σ w, 0 when every weight is 0 (an all-padding micro-batch must not give NaN)."""
    w = weights.float()
    return (values.float() * w).sum() / w.sum().clamp_min(1e-6)


# ---------------------------------------------------------------------------------------------
# chunked driver
# ---------------------------------------------------------------------------------------------

TERMS = ("soft_ce", "ce", "tv", "correct")


def _target_logits(hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None) -> torch.Tensor:
    logits = F.linear(hidden.to(weight.dtype), weight).float()  # (c, V)
    return softcap * torch.tanh(logits / softcap) if softcap else logits


def target_summary(
    target_hidden: torch.Tensor, target_weight: torch.Tensor, softcap: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logsumexp (N,) fp32 and argmax (N,) int64 of the target's full-vocabulary logits at
    final-norm hidden states (N, H), ``DEFAULT_CHUNK_ROWS`` rows at a time. What a reduced-vocabulary
    loss needs of the vocabulary outside the draft ids; the feature cache stores it per position
    (docs/cache.md) so that training computes only the draft ids' logits."""
    lse, top = [], []
    with torch.no_grad():
        for start in range(0, target_hidden.shape[0], DEFAULT_CHUNK_ROWS):
            logits = _target_logits(target_hidden[start : start + DEFAULT_CHUNK_ROWS], target_weight, softcap)
            lse.append(torch.logsumexp(logits, dim=-1))
            top.append(logits.argmax(-1))
    if not lse:
        return target_hidden.new_zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.long, device=target_hidden.device)
    return torch.cat(lse), torch.cat(top)


def target_view(
    target_hidden: torch.Tensor, target_weight: torch.Tensor, softcap: float | None, draft_ids: torch.Tensor | None,
    summary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the loss terms need of the target, without gradient: its logits on the draft ids
    (N, Vd) (all V with the full vocabulary), their full-vocabulary logsumexp (N,) and argmax (N,).
    Computed ``DEFAULT_CHUNK_ROWS`` rows at a time, so only the (N, Vd) result is ever whole.
    ``summary``: the rows' precomputed :func:`target_summary` (from the feature cache); with a
    reduced vocabulary only the Vd draft rows of the head are then multiplied (Vd/V of the work)."""
    if summary is not None and draft_ids is not None:
        with torch.no_grad():
            weight = target_weight[draft_ids.to(target_weight.device)]  # (Vd, H)
            logits_d = torch.cat([_target_logits(target_hidden[s : s + DEFAULT_CHUNK_ROWS], weight, softcap)
                                  for s in range(0, max(1, target_hidden.shape[0]), DEFAULT_CHUNK_ROWS)])
        lse, top = summary
        return logits_d, lse.float(), top.long()
    parts = []
    with torch.no_grad():
        for start in range(0, max(1, target_hidden.shape[0]), DEFAULT_CHUNK_ROWS):
            logits = _target_logits(target_hidden[start : start + DEFAULT_CHUNK_ROWS], target_weight, softcap)
            parts.append((logits if draft_ids is None else logits[:, draft_ids],
                          torch.logsumexp(logits, dim=-1), logits.argmax(-1)))
    if len(parts) == 1:
        return parts[0]
    logits_d, lse, top = (torch.cat(p) for p in zip(*parts, strict=True))
    return logits_d, lse, top


def _fused_terms(
    q_logits: torch.Tensor, p_logits_d: torch.Tensor, lse: torch.Tensor, labels: torch.Tensor | None,
    want: tuple[str, ...], grad_terms: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    """soft_ce / ce / tv from the Triton kernels (``deepspec_kernels.losses``); terms outside
    ``grad_terms`` are detached."""
    from deepspec_kernels import losses as fused

    out: dict[str, torch.Tensor] = {}
    if "soft_ce" in want:
        out["soft_ce"] = fused.soft_cross_entropy(q_logits, p_logits_d)
    if "ce" in want or "tv" in want:
        assert labels is not None or "ce" not in want, "the 'ce' term needs labels"
        ids = labels if labels is not None else torch.full_like(lse, -100, dtype=torch.long)
        out["ce"], out["tv"] = fused.ce_and_tv(q_logits, p_logits_d, lse, ids)
    return {k: v if k in grad_terms else v.detach() for k, v in out.items()}


def _terms_of_chunk(
    draft_logits_fn: Callable[..., torch.Tensor],
    want: tuple[str, ...],
    grad_terms: tuple[str, ...],
    draft_ids: torch.Tensor | None,
    target: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | Callable[[], tuple[torch.Tensor, ...]],
    labels: torch.Tensor | None,
    fused: bool,
    *draft_inputs: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    q_logits = draft_logits_fn(*draft_inputs)  # (c, Vd)
    # ``target`` is a precomputed target_view, or a thunk that computes it (then a checkpoint's
    # backward recomputes it too, trading time for the memory of a (c, Vd) tensor per chunk).
    p_logits_d, lse, p_top = target() if callable(target) else target
    done = _fused_terms(q_logits, p_logits_d, lse, labels, want, grad_terms) if fused else {}
    q_logits = q_logits.float()
    out = []
    for name in want:
        with torch.set_grad_enabled(torch.is_grad_enabled() and name in grad_terms):
            if name in done:
                out.append(done[name])
            elif name == "soft_ce":
                # Reduced vocabulary: the target restricted to the draft ids and renormalised.
                out.append(soft_cross_entropy(q_logits, p_logits_d))
            elif name == "ce":
                assert labels is not None, "the 'ce' term needs labels"
                out.append(cross_entropy(q_logits, labels))
            elif name == "tv":
                q = F.softmax(q_logits, dim=-1)
                # p on the draft ids, normalised over the full vocabulary; Σ_v min(p, q) over the
                # draft ids is exact because q is 0 off them.
                p_on_draft = torch.exp(p_logits_d - lse[:, None])
                out.append(1.0 - torch.minimum(q, p_on_draft).sum(-1))
            elif name == "correct":
                top = q_logits.argmax(-1)
                top = top if draft_ids is None else draft_ids[top]
                out.append((top == p_top).float())
            else:
                raise ValueError(f"unknown loss term {name!r}; choose from {TERMS}")
    return tuple(out)


def vocab_terms(
    draft_logits_fn: Callable[..., torch.Tensor],
    draft_inputs: tuple[torch.Tensor, ...],
    target_hidden: torch.Tensor | None,
    target_weight: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    want: tuple[str, ...] = ("soft_ce", "tv", "correct"),
    grad_terms: tuple[str, ...] = ("soft_ce",),
    draft_ids: torch.Tensor | None = None,
    softcap: float | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    target: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    fused: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    summary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-row loss terms of N rows, computed ``chunk_rows`` rows at a time.

    draft_logits_fn(*row_inputs) maps a chunk of ``draft_inputs`` (each (N, ·)) to draft logits
    (c, Vd); the target logits are ``target_hidden`` (N, H) @ ``target_weight``ᵀ (V, H), computed
    without gradient. ``draft_ids`` (Vd,) are the target ids of the draft vocabulary when it is
    reduced. ``labels`` (N,) are target token ids for the hard CE (−100 = ignore; with a reduced
    vocabulary pass draft ids). Terms: soft_ce (against the target distribution), ce (against
    labels), tv (½‖q − p‖₁ with p over the full target vocabulary), correct (draft argmax ==
    target argmax, as float). Only ``grad_terms`` carry gradients. Returns {term: (N,) fp32}.
    ``target``: the rows' :func:`target_view`, when the caller already has it (then
    ``target_hidden`` / ``target_weight`` are not read and may be None). ``fused``: soft_ce, ce and
    tv from the Triton kernels (CUDA, or CPU under ``TRITON_INTERPRET=1``) instead of eager torch.
    ``memory_budget``: bytes the backward may keep (:func:`kept_bytes`); above it every chunk is
    recomputed in backward, target view included. Values and gradients are the same either way.
    ``summary``: the rows' (logsumexp (N,), argmax (N,)) from :func:`target_summary`, when the
    caller has them (a version-2 feature cache): a reduced view then costs Vd/V of the matmul.
    """
    n = draft_inputs[0].shape[0]
    chunk_rows = max(1, chunk_rows)
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in draft_inputs)
    width = target[0].shape[1] if target is not None else (
        draft_ids.numel() if draft_ids is not None else target_weight.shape[0])
    recompute = need_grad and kept_bytes(n, width) > memory_budget
    results: dict[str, list[torch.Tensor]] = {name: [] for name in want}
    for start in range(0, n, chunk_rows):
        sl = slice(start, min(n, start + chunk_rows))
        view: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | Callable[[], tuple[torch.Tensor, ...]]
        if target is not None:
            p_logits_d, lse, p_top = target
            view = (p_logits_d[sl], lse[sl], p_top[sl])
        else:
            assert target_hidden is not None, "vocab_terms needs target_hidden when no target view is given"
            if draft_ids is not None or not recompute:
                # Computed once and kept for the backward: a reduced view is small next to the (c, V)
                # target matmul, and a full one fits the budget.
                view = target_view(target_hidden[sl], target_weight, softcap, draft_ids,
                                   None if summary is None else (summary[0][sl], summary[1][sl]))
            else:
                view = functools.partial(target_view, target_hidden[sl], target_weight, softcap, None)
        chunk_labels = None if labels is None else labels[sl]
        chunk_inputs = [x[sl] for x in draft_inputs]
        if recompute:
            outs = checkpoint(_terms_of_chunk, draft_logits_fn, want, grad_terms, draft_ids, view,
                              chunk_labels, fused, *chunk_inputs, use_reentrant=False)
        else:
            outs = _terms_of_chunk(draft_logits_fn, want, grad_terms, draft_ids, view,
                                   chunk_labels, fused, *chunk_inputs)
        for name, value in zip(want, outs, strict=True):
            results[name].append(value)
    if n == 0:
        return {name: draft_inputs[0].new_zeros(0, dtype=torch.float32) for name in want}
    return {name: torch.cat(vals) for name, vals in results.items()}


__all__ = [
    "soft_cross_entropy", "cross_entropy", "total_variation", "bce_towards", "position_weights",
    "step_weights", "weighted_mean", "target_view", "target_summary", "vocab_terms", "kept_bytes", "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MEMORY_BUDGET",
]
