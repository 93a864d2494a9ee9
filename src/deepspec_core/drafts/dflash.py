"""DFlash: a parallel block drafter with the target context injected as keys/values in every layer.

Context: c_t = RMSNorm(fc(concat of the K captured layers at t)). Every draft layer projects the
context with its own W_K / W_V (plus its k-norm and rope at position t) and attends over
[context ; block]: K = [W_K c ; W_K x_block], V likewise.

Block for anchor a (the last committed token, whose features the target has not produced yet):
slot 0 = embed(x_a), the other slots = the mask token's embedding, at positions a, a+1, ...
Every slot sees the context strictly before a and the whole block (bidirectional); one forward
gives all γ = ``block_size`` predictions of x_{a+1}..x_{a+γ}:
- ``predict_from_anchor`` (DeepSpec's variant, default): γ slots, slot k−1 predicts x_{a+k};
- otherwise (original DFlash): γ+1 slots, the anchor predicts nothing, mask slot k predicts x_{a+k}.
The export of the original variant writes block_size = γ+1 (the serving engines' convention).

Training samples up to ``num_anchors`` anchors per sequence among positions a with x_a and x_{a+1}
supervised; slot k is supervised while x_{a+1}..x_{a+k} all are (cumulative-product prefix).
Loss: CE against the data tokens weighted by w_k = exp(−(k−1)/loss_decay), a weighted mean.

Mask token: ``target.mask_token_id`` (an unused embedding row of the target, frozen like the
rest of the embedding); when it is unset the draft learns its own mask embedding instead.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from deepspec_core import losses
from deepspec_core.specbase import BlockDraftSpec, DraftSpecBase

from .base import DRAFTS, DraftBatch, DraftLoss, DraftModel, Proposal, block_metrics, load_target_layers
from .layers import DraftLayer, FeatureFusion, Rotary, cat_kv, draft_layer_config


def sample_anchors(loss_mask: torch.Tensor, num_anchors: int, generator: torch.Generator | None = None):
    """Up to ``num_anchors`` random anchors per row among positions a with loss_mask[a] & loss_mask[a+1].

    loss_mask (B, T) bool → anchors (B, N) int64 sorted ascending (0 where unused), keep (B, N) bool,
    N = min(num_anchors, T − 1).
    """
    b, t = loss_mask.shape
    n = max(1, min(num_anchors, t - 1))
    cand = torch.zeros(b, t, dtype=torch.bool, device=loss_mask.device)
    cand[:, :-1] = loss_mask[:, :-1] & loss_mask[:, 1:]
    score = torch.rand(b, t, device=loss_mask.device, generator=generator)
    score = torch.where(cand, score, torch.full_like(score, 2.0))  # non-candidates sort last
    pick = score.topk(n, dim=1, largest=False).indices  # (B, N)
    keep = cand.gather(1, pick)
    anchors = torch.where(keep, pick, torch.full_like(pick, t))  # unused ones sort to the end
    anchors, order = anchors.sort(dim=1)
    keep = keep.gather(1, order)
    return torch.where(keep, anchors, torch.zeros_like(anchors)), keep


class DFlashSpec(BlockDraftSpec):
    algo: Literal["dflash"] = Field("dflash", description="Parallel block drafter with target-context KV injection.")


@DRAFTS.register("dflash")
class DFlashDraft(DraftModel):
    algo = "dflash"
    spec_class: ClassVar[type[DraftSpecBase]] = DFlashSpec

    def __init__(self, draft_spec, target_spec, target_config, embed_weight, lm_head_weight):
        super().__init__(draft_spec, target_spec, target_config, embed_weight, lm_head_weight)
        h, fam = self.hidden_size, self.family
        self.layer_config = cfg = draft_layer_config(target_config, draft_spec.num_layers, draft_spec.intermediate_size)
        eps = getattr(cfg, "rms_norm_eps", 1e-6)
        self.fusion = FeatureFusion(fam, len(self.layer_ids), h, eps, norm=True)
        self.layers = nn.ModuleList([DraftLayer(fam, cfg, i) for i in range(draft_spec.num_layers)])
        self.norm = fam.rms_norm(h, eps=eps)
        self.rotary = Rotary(fam, cfg)
        self.block_size = draft_spec.block_size
        self.slots = self.block_size + (0 if draft_spec.predict_from_anchor else 1)
        self.mask_embedding = None if self.mask_token_id is not None else nn.Parameter(torch.randn(h) * 0.02)
        self.init_draft_vocab(draft_spec.draft_vocab_size)
        self._ctx_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @torch.no_grad()
    def init_from_target(self, target_dir: str) -> None:
        """Start the draft's layers from the target's decoder layers ``draft.init_layers`` and its final
        norm from the target's, so that a fresh draft runs the target's own last computation into the
        head (which starts from the target's rows). A deviation from the reference's random init,
        measured (worse than random init on SmolLM2) in docs/algorithms.md; parameters keep their own dtype."""
        ids = self.spec.init_layers
        if not ids:
            return
        modules = [layer.layer for layer in self.layers]
        states, norm = load_target_layers(target_dir, ids, modules, norm_like=self.norm)
        for module, state in [*zip(modules, states, strict=True), (self.norm, norm)]:
            for name, param in module.named_parameters():
                param.copy_(state[name].to(param.dtype))

    # -- backbone -------------------------------------------------------------------------------
    def context_kv(self, fused: torch.Tensor, positions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer rotated (k, v) (B, h_kv, C, D) of fused context (B, C, H) at positions (B, C)."""
        rope = self.rotary(fused, positions)
        return [layer.key_value(fused.to(self.param_dtype), rope) for layer in self.layers]

    def block_embeddings(self, anchor_ids: torch.Tensor) -> torch.Tensor:
        """anchor_ids (B, N) → block inputs (B, N, S, H): the anchor, then mask embeddings."""
        b, n = anchor_ids.shape
        if self.mask_embedding is not None:
            mask = self.mask_embedding.to(self.param_dtype).expand(b, n, self.slots - 1, -1)
        else:
            mask_ids = torch.full((b, n, self.slots - 1), self.mask_token_id, device=anchor_ids.device)
            mask = self.embed(mask_ids)
        return torch.cat([self.embed(anchor_ids)[:, :, None], mask], dim=2)

    def backbone(self, block: torch.Tensor, block_pos: torch.Tensor, ctx_kv, mask: torch.Tensor) -> torch.Tensor:
        """block (B, Q, H) at block_pos (B, Q), context ctx_kv per layer, mask (B|1, 1, Q, C+Q) → normed (B, Q, H)."""
        rope = self.rotary(block, block_pos)
        x = block
        for layer, kv in zip(self.layers, ctx_kv, strict=True):
            x, _ = layer(x, rope, mask, prefix_kv=kv)
        return self.norm(x)

    def prediction_slots(self, hidden: torch.Tensor) -> torch.Tensor:
        """(…, S, H) block outputs → (…, γ, H), the slots that predict x_{a+1}..x_{a+γ}."""
        return hidden[..., : self.block_size, :] if self.slots == self.block_size else hidden[..., 1:, :]

    def block_hidden(self, batch: DraftBatch, anchors: torch.Tensor) -> torch.Tensor:
        """Prediction hidden states (B, N, γ, H) of blocks anchored at ``anchors`` (B, N)."""
        ids = batch.input_ids
        b, t = ids.shape
        n, s = anchors.shape[1], self.slots
        dev = ids.device
        fused = self.fusion(batch.aux_hidden)  # (B, T, H)
        ctx_kv = self.context_kv(fused, torch.arange(t, device=dev)[None].expand(b, t))
        block = self.block_embeddings(ids.gather(1, anchors)).reshape(b, n * s, -1)
        block_pos = (anchors[..., None] + torch.arange(s, device=dev)).reshape(b, n * s)
        q_anchor = anchors.repeat_interleave(s, dim=1)  # (B, Q)
        see_ctx = torch.arange(t, device=dev)[None, None, :] < q_anchor[..., None]  # strictly before the anchor
        q_block = torch.arange(n * s, device=dev) // s
        see_block = (q_block[:, None] == q_block[None, :]).expand(b, -1, -1)
        mask = torch.cat([see_ctx, see_block], dim=-1)[:, None]  # (B, 1, Q, T+Q)
        hidden = self.backbone(block, block_pos, ctx_kv, mask).view(b, n, s, -1)
        return self.prediction_slots(hidden)

    # -- training -------------------------------------------------------------------------------
    def forward_train(self, batch: DraftBatch, anchors: torch.Tensor | None = None,
                      keep: torch.Tensor | None = None) -> DraftLoss:
        """Sample anchors (or take ``anchors``/``keep`` (B, N)), run the blocks, return loss and metrics."""
        if anchors is None:
            anchors, keep = sample_anchors(batch.loss_mask.bool(), self.spec.num_anchors)
        elif keep is None:
            keep = torch.ones_like(anchors, dtype=torch.bool)
        hidden = self.block_hidden(batch, anchors)  # (B, N, γ, H)
        ids, lm = batch.input_ids, batch.loss_mask.bool()
        b, t = ids.shape
        label_pos = anchors[..., None] + torch.arange(1, self.block_size + 1, device=ids.device)  # (B, N, γ)
        safe = label_pos.clamp(max=t - 1).reshape(b, -1)
        in_range = label_pos < batch.attention_mask.sum(-1)[:, None, None]
        sup = lm.gather(1, safe).view_as(label_pos)
        valid = torch.cumprod((in_range & sup & keep[..., None]).long(), -1).bool()
        labels = ids.gather(1, safe).view_as(label_pos)
        src = (label_pos - 1).clamp(max=t - 1).reshape(b, -1)  # (B, N·γ): the target's view of x_{a+k}
        target_h = batch.final_hidden.gather(1, src[..., None].expand(-1, -1, self.hidden_size))
        target_h = target_h.view(*label_pos.shape, self.hidden_size)
        summary = batch.summary_rows((torch.arange(b, device=ids.device)[:, None] * t + src).reshape(-1))
        prev = torch.cat([ids.gather(1, anchors)[..., None], labels[..., :-1]], dim=-1)  # x_{a+k−1}
        return self.block_loss(hidden, labels, prev, target_h, valid, summary)

    @torch.no_grad()
    def block_logits(self, batch: DraftBatch, anchors: torch.Tensor) -> torch.Tensor:
        """Teacher-forced draft logits (B, N, γ, V) of blocks at ``anchors``: slot k predicts x_{a+k}."""
        ids = batch.input_ids
        hidden = self.block_hidden(batch, anchors)
        pos = (anchors[..., None] + torch.arange(self.block_size, device=ids.device)).clamp(max=ids.shape[1] - 1)
        prev = ids.gather(1, pos.reshape(ids.shape[0], -1)).view_as(pos)  # x_{a+k−1}
        return self.full_vocab_logits(self.row_logits(*self.row_inputs(hidden, prev)).float())

    def teacher_forced_logits(self, batch: DraftBatch, anchors: torch.Tensor) -> torch.Tensor:
        return self.block_logits(batch, anchors)

    def row_inputs(self, hidden: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-prediction inputs of ``row_logits``: (B, N, γ, ·) tensors. DFlash: the hidden state only."""
        return (hidden,)

    def row_logits(self, h: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.vocab_logits(h)

    def vocab_rows(self, hidden, labels, prev, target_h, valid, want, grad_terms, summary=None):
        """Vocabulary terms of the supervised predictions only, scattered back to (B·N, γ).
        ``summary``: the target's (logsumexp, argmax) per prediction (B·N·γ,), when the cache has them."""
        rows = valid.reshape(-1).nonzero().squeeze(-1)
        inputs = tuple(x.reshape(valid.numel(), -1)[rows] for x in self.row_inputs(hidden, prev))
        terms = losses.vocab_terms(
            self.row_logits, inputs, target_h.reshape(-1, self.hidden_size)[rows], self.target_head.weight,
            labels=self.to_draft_labels(labels.reshape(-1)[rows]), want=want, grad_terms=grad_terms,
            draft_ids=self.draft_ids, softcap=self.softcap, fused=self.fused_losses,
            memory_budget=self.loss_memory_budget,
            summary=None if summary is None else (summary[0][rows], summary[1][rows]),
        )
        shape = (valid.shape[0] * valid.shape[1], valid.shape[2])
        full = {}
        for name, value in terms.items():
            out = value.new_zeros(valid.numel())
            full[name] = out.index_copy(0, rows, value).view(shape) if rows.numel() else out.view(shape)
        return full

    def slot_weights(self, valid: torch.Tensor, labels: torch.Tensor):
        """(B, N, γ) supervision and labels → (B·N, γ) mask v, position weights w = w_k·v, and the CE
        weights: w without labels outside a reduced draft vocabulary (they cannot be learned)."""
        v = valid.reshape(-1, self.block_size)
        w = losses.position_weights(self.block_size, self.spec.loss_decay, valid.device) * v
        return v, w, w * self.in_draft_vocab(labels).reshape_as(w)

    def block_loss(self, hidden, labels, prev, target_h, valid, summary=None) -> DraftLoss:
        terms = self.vocab_rows(hidden, labels, prev, target_h, valid, ("ce", "tv", "correct"), ("ce",), summary)
        v, w, w_ce = self.slot_weights(valid, labels)
        loss = losses.weighted_mean(terms["ce"], w_ce)
        metrics = block_metrics(terms["correct"], 1.0 - terms["tv"].detach(), v)
        metrics.update(loss=loss.detach(), ce=loss.detach())
        return DraftLoss(loss=loss, metrics=metrics)

    # -- decoding -------------------------------------------------------------------------------
    @torch.no_grad()
    def start(self, input_ids: torch.Tensor, aux_hidden: torch.Tensor) -> None:
        """Reset and ingest a prompt: input_ids (B, n), target features aux_hidden (B, n, K, H).

        After it the per-layer context cache holds the projected features of positions 0..n−1.
        """
        self._ctx_kv = None
        self.commit(input_ids, aux_hidden)

    @torch.no_grad()
    def commit(self, tokens: torch.Tensor, aux_hidden: torch.Tensor) -> None:
        """Ingest tokens the target has read and kept ([last_token, accepted drafts], (B, m)) with
        their features (B, m, K, H): their context keys/values are appended at positions n..n+m−1.
        Block keys/values are never cached, so a rejection needs no crop."""
        b, m = tokens.shape
        n = self.context_length
        pos = torch.arange(n, n + m, device=aux_hidden.device)[None].expand(b, m)
        new = self.context_kv(self.fusion(aux_hidden), pos)
        self._ctx_kv = cat_kv(self._ctx_kv, new)

    @property
    def context_length(self) -> int:
        return 0 if self._ctx_kv is None else self._ctx_kv[0][0].shape[2]

    @torch.no_grad()
    def propose(self, last_token: torch.Tensor, k: int | None = None, temperature: float = 0.0,
                generator: torch.Generator | None = None, policy: Any = None) -> Proposal:
        """Draft k ≤ block_size tokens after ``last_token`` (B,) with one block forward (the full block
        runs, as in training, and the first k predictions are returned)."""
        k = self.block_size if k is None else k
        if not 1 <= k <= self.block_size:
            raise ValueError(f"a {self.algo} draft proposes 1..{self.block_size} tokens per round, not {k}")
        if self._ctx_kv is None:
            raise RuntimeError("call start() before propose()")
        b, n, s = last_token.shape[0], self.context_length, self.slots
        block = self.block_embeddings(last_token.view(b, 1)).view(b, s, -1)
        pos = torch.arange(n, n + s, device=block.device)[None].expand(b, s)
        mask = torch.ones(1, 1, s, n + s, dtype=torch.bool, device=block.device)
        hidden = self.prediction_slots(self.backbone(block, pos, self._ctx_kv, mask))[:, :k]  # (B, k, H)
        prop = self.sample_block(hidden, last_token, temperature, generator, policy)
        if policy is None:
            return prop
        assert prop.confidences is not None  # every sample_block reports confidences
        return prop.head(policy.length(prop.confidences[0].tolist()))

    def sample_block(self, hidden: torch.Tensor, last_token: torch.Tensor, temperature: float,
                     generator: torch.Generator | None, policy: Any = None) -> Proposal:
        """DFlash slots are independent given the block: sample each from its own distribution."""
        b, k, _ = hidden.shape
        logits = self.vocab_logits(hidden).reshape(b * k, -1)
        tok, p, dist, conf = self.sample_tokens(logits, temperature, generator)
        return Proposal(tokens=tok.view(b, k), probs=p.view(b, k), dists=None if dist is None else dist.view(b, k, -1),
                        confidences=conf.view(b, k))
