"""DSpark: the DFlash backbone (anchor-predicts or original variant) plus a sequential head and a
confidence head (see heads.py).

Slot k's logits are the backbone's U_k plus the sequential head's bias from x_{k−1} (teacher
forced in training, the just-drafted token at decode time, so proposals are sampled left to
right). The confidence head predicts the acceptance probability 1 − TV_k of slot k.

Loss (each term a mean over supervised slots weighted by w_k = exp(−(k−1)/loss_decay)):
    ce_weight · CE(data token) + tv_weight · ‖p_d − p_t‖₁ + bce_weight · BCE(c_k, 1 − ½‖p_d − p_t‖₁)
The middle term is the L1 distance (= 2·TV) as in the paper's formula and the reference code;
the BCE target is the acceptance probability, not differentiated.
With markov_rank 0 (no sequential head), no confidence head and tv_weight 0, DSpark computes
exactly DFlash's predictions and ce_weight × DFlash's loss.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from deepspec_core import losses
from deepspec_core.specbase import BlockDraftSpec

from .base import DRAFTS, DraftLoss, Proposal, block_metrics
from .dflash import DFlashDraft
from .heads import ConfidenceHead, build_sequential_head


class DSparkSpec(BlockDraftSpec):
    algo: Literal["dspark"] = Field("dspark", description="DFlash backbone with a sequential head and a confidence head.")
    sequential_head: Literal["markov", "rnn", "none"] = Field("markov", description="Sequential head over the block.")
    markov_rank: int = Field(256, ge=0, description="Rank r of the sequential head's token embedding (0 disables it).")
    confidence_head: bool = Field(True, description="Train a per-slot acceptance-confidence head.")
    ce_weight: float = Field(0.1, ge=0.0, description="Weight of the cross-entropy term.")
    tv_weight: float = Field(0.9, ge=0.0, description="Weight of the total-variation term.")
    bce_weight: float = Field(1.0, ge=0.0, description="Weight of the confidence BCE term.")


@DRAFTS.register("dspark")
class DSparkDraft(DFlashDraft):
    algo = "dspark"
    spec_class = DSparkSpec

    def __init__(self, draft_spec, target_spec, target_config, embed_weight, lm_head_weight):
        super().__init__(draft_spec, target_spec, target_config, embed_weight, lm_head_weight)
        s = draft_spec
        self.seq_head = build_sequential_head(
            s.sequential_head, self.vocab_size, s.markov_rank, self.hidden_size, out_size=self.draft_vocab_size
        )
        extra = s.markov_rank if self.seq_head is not None else 0
        self.confidence = ConfidenceHead(self.hidden_size + extra) if s.confidence_head else None

    # -- per-slot logits ------------------------------------------------------------------------
    def row_inputs(self, hidden: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.seq_head is None:
            return (hidden,)
        return hidden, self.seq_head.features(prev, hidden)

    def row_logits(self, h: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.biased_logits(self.vocab_logits(h), *extra)

    def biased_logits(self, logits: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """Backbone logits U_k (…, Vd) plus the sequential head's bias of features e (…, r), if any."""
        if not extra:
            return logits
        return logits.float() + self.seq_head.bias(extra[0]).float()

    def confidence_logits(self, hidden: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """(…, γ, H), (…, γ) → confidence logits (…, γ)."""
        emb = self.seq_head.token_embedding(prev) if self.seq_head is not None else None
        return self.confidence(hidden, emb)

    # -- training -------------------------------------------------------------------------------
    def block_loss(self, hidden, labels, prev, target_h, valid, summary=None) -> DraftLoss:
        s = self.spec
        grad_terms = ("ce", "tv") if s.tv_weight > 0 else ("ce",)
        terms = self.vocab_rows(hidden, labels, prev, target_h, valid, ("ce", "tv", "correct"), grad_terms, summary)
        v, w, w_ce = self.slot_weights(valid, labels)
        ce = losses.weighted_mean(terms["ce"], w_ce)
        l1 = losses.weighted_mean(2.0 * terms["tv"], w)
        accept = 1.0 - terms["tv"].detach()
        loss = s.ce_weight * ce + (s.tv_weight * l1 if s.tv_weight > 0 else 0.0)
        metrics = {"ce": ce.detach(), "l1": l1.detach()}
        if self.confidence is not None:
            conf = self.confidence_logits(hidden, prev).reshape(-1, self.block_size)
            bce = losses.weighted_mean(losses.bce_towards(conf, accept), w)
            loss = loss + s.bce_weight * bce
            with torch.no_grad():
                err = torch.sigmoid(conf) - accept
                metrics.update(bce=bce.detach(), conf_abs_error=losses.weighted_mean(err.abs(), v),
                               conf_bias=losses.weighted_mean(err, v))
        metrics.update(block_metrics(terms["correct"], accept, v))
        metrics["loss"] = loss.detach()
        return DraftLoss(loss=loss, metrics=metrics)

    # -- decoding -------------------------------------------------------------------------------
    def sample_block(self, hidden: torch.Tensor, last_token: torch.Tensor, temperature: float,
                     generator: torch.Generator | None, policy: Any = None) -> Proposal:
        """Left to right: slot k's distribution depends on the token drafted at slot k−1. The
        confidence head's output is the slot's confidence; a ``policy`` that refuses a slot ends
        the block there, before the slot is sampled."""
        if self.seq_head is None:
            prop = super().sample_block(hidden, last_token, temperature, generator)
            if self.confidence is not None:
                prop.confidences = torch.sigmoid(self.confidence(hidden))
            return prop
        b, k, _ = hidden.shape
        # The backbone's U_k does not depend on the drafted tokens: one head product for all k slots
        # (about the cost of one row on a CPU), then each slot adds its sequential bias in turn.
        base = self.vocab_logits(hidden)  # (B, k, Vd)
        prev, state = last_token, None
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        dists: list[torch.Tensor | None] = []
        confs: list[torch.Tensor] = []
        for i in range(k):
            h = hidden[:, i]
            c = torch.sigmoid(self.confidence(h, self.seq_head.token_embedding(prev))) if self.confidence else None
            if c is not None and policy is not None and policy.length([*(x.item() for x in confs), c.item()]) <= i:
                break
            e, state = self.seq_head.step(prev, h, state)
            tok, p, dist, own = self.sample_tokens(self.biased_logits(base[:, i], e), temperature, generator)
            tokens.append(tok)
            probs.append(p)
            dists.append(dist)
            confs.append(c if c is not None else own)
            prev = tok
        if not tokens:
            return Proposal.empty(last_token.shape[0], self.vocab_size, last_token.device, temperature > 0)
        return Proposal.from_steps(tokens, probs, dists, confs)
