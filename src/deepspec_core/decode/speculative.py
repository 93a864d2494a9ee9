"""Chain speculative decoding, lossless, for any DraftModel; and target-only decoding to compare.

One round: the draft proposes k tokens after the last committed token; the target reads
[last, d_1..d_k] in ONE forward pass with its KV cache (through ``capture_features``, so the draft
gets exactly the features it was trained on); the verification rule keeps j drafted tokens and
yields one more (corrected at the first rejection, or the bonus token from p_{k+1}); the target
cache is cropped to the kept tokens and the draft ingests them. A round commits j + 1 tokens,
fewer when the output ends inside it (an accepted EOS, or ``max_new_tokens``): τ counts only what
was committed (:mod:`deepspec_core.decode.rounds`).

Verification rules are pure functions of tensors (testable on their own). Lossless at T > 0
(Leviathan et al. 2023): accept x_j with probability min(1, p_j(x_j)/q_j(x_j)) using the exact fp32
q the draft sampled with, resample from norm(max(p_j − q_j, 0)) at the first rejection, sample the
bonus from p_{k+1} when all survive. Greedy: accept while the drafted token is the target argmax.

Random-number convention (shared by both decoders so that a seed means the same thing): one
``torch.Generator``; each token the target picks on its own is one ``torch.multinomial`` draw from
softmax(logits / T) in fp32 — the first token after the prompt is drawn identically by both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deepspec_core.decode.cpu_linear import FewRowLinear, is_packed
from deepspec_core.decode.kvcache import crop_cache, new_cache
from deepspec_core.decode.policy import DraftLength
from deepspec_core.decode.rounds import RoundOutcome
from deepspec_core.drafts.base import Drafter
from deepspec_core.specbase import check_draft_length
from deepspec_core.targets.hf import capture_features, get_lm_head, text_config

# -- verification rules (pure) -----------------------------------------------------------------


@dataclass
class Verdict:
    num_accepted: torch.Tensor  # (B,) int64 in [0, k]: drafted tokens that survive
    next_token: torch.Tensor  # (B,) int64: corrected token at the first rejection, or the bonus token


def target_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in fp32 (..., V): the one way target logits become p."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling; temperature 0 is greedy")
    return torch.softmax(logits.float() / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of (B, V) probabilities → (B,) int64."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def pick_token(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A token the target picks alone: (B, V) logits → (B,) argmax at T = 0, else a sample."""
    if temperature <= 0:
        return logits.argmax(-1)
    return sample(target_probs(logits, temperature), generator)


def _leading_true(mask: torch.Tensor) -> torch.Tensor:
    """(B, k) bool → (B,) length of the leading run of True."""
    return mask.long().cumprod(dim=-1).sum(dim=-1)


def greedy_verify(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> Verdict:
    """draft_tokens (B, k); target_logits (B, k+1, V), position j scoring the token after d_j (d_0 = last)."""
    best = target_logits.argmax(-1)  # (B, k+1)
    n = _leading_true(draft_tokens == best[:, :-1])  # (B,)
    return Verdict(n, best.gather(1, n[:, None]).squeeze(1))


def rejection_verify(
    draft_tokens: torch.Tensor,
    draft_dists: torch.Tensor,
    p: torch.Tensor,
    generator: torch.Generator | None = None,
    draft_token_probs: torch.Tensor | None = None,
) -> Verdict:
    """Speculative rejection sampling: the committed tokens follow p exactly.

    draft_tokens (B, k); draft_dists (B, k, V) the fp32 q_j that sampled them; p (B, k+1, V) fp32
    target distributions; draft_token_probs (B, k) = q_j(d_j) as sampled (read from draft_dists
    when not given).
    """
    b, k = draft_tokens.shape
    q, p = draft_dists.float(), p.float()
    if draft_token_probs is None:
        draft_token_probs = q.gather(-1, draft_tokens[..., None]).squeeze(-1)  # (B, k)
    p_tok = p[:, :k].gather(-1, draft_tokens[..., None]).squeeze(-1)  # (B, k)
    u = torch.rand(b, k, generator=generator, device=p.device)  # (B, k)
    # u < p/q written as u·q < p: no division by a tiny q.
    n = _leading_true(u * draft_token_probs.float() < p_tok)  # (B,)
    # Resample at position n: the residual where d_n was rejected; at the bonus position q is 0,
    # so the residual is p_{k+1} itself.
    q_pad = torch.cat([q, q.new_zeros(b, 1, q.shape[-1])], dim=1)  # (B, k+1, V)
    idx = n[:, None, None].expand(b, 1, p.shape[-1])
    p_n, q_n = p.gather(1, idx).squeeze(1), q_pad.gather(1, idx).squeeze(1)  # (B, V)
    residual = (p_n - q_n).clamp_min(0.0)
    mass = residual.sum(-1, keepdim=True)
    # A zero residual means p == q there, where rejection has probability 0; guard rounding with p.
    residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), p_n)
    return Verdict(n, sample(residual, generator))


def verify(
    proposal: Any, target_logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> Verdict:
    """The lossless rule for a :class:`~deepspec_core.drafts.Proposal`: greedy at T = 0, else rejection sampling."""
    if temperature <= 0:
        return greedy_verify(proposal.tokens, target_logits)
    if proposal.dists is None:
        raise ValueError("sampling verification needs the draft's full distributions (Proposal.dists)")
    return rejection_verify(
        proposal.tokens, proposal.dists, target_probs(target_logits, temperature), generator, proposal.probs
    )


VerifyFn = Callable[[Any, torch.Tensor, float, "torch.Generator | None"], Verdict]


# -- target plumbing ---------------------------------------------------------------------------


def lm_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Target logits from final-norm hidden states (B, T, H) or (B, H) → (…, V), with the target's softcap."""
    logits = get_lm_head(model)(hidden)
    cap = getattr(text_config(model.config), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


# -- decoding ----------------------------------------------------------------------------------


@dataclass
class Generation:
    tokens: list[int]  # new tokens (EOS included when hit), at most max_new_tokens
    outcomes: list[RoundOutcome] = field(default_factory=list)  # per verification round
    # per round, when the draft reports them (DSpark): one confidence per drafted slot
    confidences: list[list[float]] = field(default_factory=list)

    @property
    def accept_lengths(self) -> list[int]:
        """Tokens each round committed, the bonus / corrected token included: sum + 1 == len(tokens)."""
        return [o.committed for o in self.outcomes]

    @property
    def rounds(self) -> int:
        return len(self.outcomes)


def _finish(tokens: list[int], max_new_tokens: int, eos: set[int]) -> tuple[list[int], bool]:
    """Truncate at the first EOS (kept) or at max_new_tokens; say whether generation is over."""
    for i, t in enumerate(tokens[:max_new_tokens]):
        if t in eos:
            return tokens[: i + 1], True
    return tokens[:max_new_tokens], len(tokens) >= max_new_tokens


@torch.no_grad()
def target_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    eos_token_ids: Sequence[int] = (),
) -> Generation:
    """Plain autoregressive decoding of ``input_ids`` (1, T) with a KV cache (the speed baseline)."""
    eos = set(eos_token_ids)
    cache = new_cache(model)
    feats = capture_features(model, input_ids, past_key_values=cache, use_cache=True)
    out: list[int] = []
    while True:
        tok = pick_token(lm_logits(model, feats.final_hidden[:, -1]), temperature, generator)  # (1,)
        out.append(int(tok))
        out, done = _finish(out, max_new_tokens, eos)
        if done:
            return Generation(out)
        feats = capture_features(model, tok[:, None], past_key_values=cache, use_cache=True)


@torch.no_grad()
def speculative_generate(
    model: nn.Module,
    draft: Drafter,
    input_ids: torch.Tensor,
    num_draft_tokens: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    eos_token_ids: Sequence[int] = (),
    verify_fn: VerifyFn = verify,
    draft_length: DraftLength | None = None,
) -> Generation:
    """Chain speculative decoding of ``input_ids`` (1, T); the output follows the target exactly.

    ``draft`` is a DraftModel (start / propose / commit). ``draft_length`` picks how many of the k
    drafted tokens each round verifies (:mod:`deepspec_core.decode.policy`; default: all k); it
    only shortens chains, so the output is the same. ``verify_fn`` exists so tests can show that a
    broken rule is caught; leave it alone otherwise.
    """
    if input_ids.shape[0] != 1:
        raise ValueError("speculative_generate decodes one sequence at a time (batch size 1)")
    k = num_draft_tokens
    check_draft_length(k, draft.max_proposal(), draft.algo, field="num_draft_tokens")
    eos = set(eos_token_ids)
    layer_ids = list(draft.layer_ids)
    cache = new_cache(model)
    feats = capture_features(model, input_ids, layer_ids=layer_ids, past_key_values=cache, use_cache=True)
    last = pick_token(lm_logits(model, feats.final_hidden[:, -1]), temperature, generator)  # (1,)
    out, done = _finish([int(last)], max_new_tokens, eos)
    gen = Generation(out)
    if done:
        return gen
    draft.start(input_ids, feats.aux_hidden)
    policy = None if draft_length is None or draft_length.name == "fixed" else draft_length
    # k + 1 rows at about the cost of one on a CPU (cpu_linear): packed weights do it on their own.
    few_rows = contextlib.nullcontext if is_packed(model) else FewRowLinear
    while True:
        if policy is None:
            prop = draft.propose(last, k, temperature, generator)
        else:
            prop = draft.propose(last, k, temperature, generator, policy=policy)
            if prop.confidences is None:
                raise ValueError(f"the {policy.name} draft-length policy needs per-slot confidences; "
                                 "this draft reports none")
            prop = prop.head(policy.length(prop.confidences[0].tolist()))
        drafted = prop.tokens.shape[1]  # k, or fewer when the policy stopped the chain
        block = torch.cat([last[:, None], prop.tokens], dim=1)  # (1, drafted+1)
        with few_rows():
            feats = capture_features(model, block, layer_ids=layer_ids, past_key_values=cache, use_cache=True)
            logits = lm_logits(model, feats.final_hidden)  # (1, drafted+1, V)
        verdict = verify_fn(prop, logits, temperature, generator)
        n = int(verdict.num_accepted[0])
        crop_cache(cache, drafted - n)  # keep last + the n accepted drafts
        if prop.confidences is not None:
            gen.confidences.append(prop.confidences[0].float().tolist())
        before = len(gen.tokens)
        gen.tokens, done = _finish(
            gen.tokens + prop.tokens[0, :n].tolist() + [int(verdict.next_token[0])], max_new_tokens, eos
        )
        gen.outcomes.append(RoundOutcome.of(n, drafted, len(gen.tokens) - before))
        if done:
            return gen
        draft.commit(block[:, : n + 1], feats.aux_hidden[:, : n + 1])
        last = verdict.next_token.view(1)
