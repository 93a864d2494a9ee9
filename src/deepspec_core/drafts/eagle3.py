"""Eagle3: an autoregressive drafter on fused target features, trained with training-time test.

Input at position t: concat(embed(x_{t+1}), h_t) of width 2H, where h_t = fc(concat of the K
captured layers) is normalised by the first layer's ``hidden_norm`` and the embedding by its
``input_layernorm``; the residual stream starts from h_t. Output g_t → norm → lm_head predicts
x_{t+2}, i.e. matches the target distribution at t+1.

Training-time test (TTT) unrolls ``ttt_length`` steps. Step i feeds, at position t, embed(x_{t+1+i})
and the draft's own step-(i−1) output g_t, at rope position t+i (the position the token has at
decode time). Its keys/values are appended to those of earlier steps; position t at step i sees
step-0 keys at positions ≤ t (causal, computed from real features) and its own entries of steps
1..i (the diagonal) — exactly what the draft sees while decoding i tokens ahead. Loss:
Σ_i step_decay**i · soft-CE(draft, target distribution at t+1+i), each a mean over supervised
positions (token x_{t+2+i} in the loss mask, and every earlier step's too).

Reduced draft vocabulary (``draft_vocab_size``): see :class:`~.base.DraftModel` — a trainable
(Vd, H) head over the most frequent target tokens; proposals are mapped back to target ids.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from deepspec_core import losses
from deepspec_core.specbase import DraftSpecBase

from .base import DRAFTS, DraftBatch, DraftLoss, DraftModel, Proposal, block_metrics
from .layers import DraftLayer, FeatureFusion, Rotary, cat_kv, draft_layer_config


class Eagle3Spec(DraftSpecBase):
    algo: Literal["eagle3"] = Field("eagle3", description="Autoregressive drafter with training-time test.")
    num_layers: int = Field(1, ge=1, description="Decoder layers of the draft.")
    ttt_length: int = Field(7, ge=1, description="Training-time-test unroll steps (also the default chain length).")
    step_decay: float = Field(0.8, gt=0.0, le=1.0, description="Loss weight of TTT step i is step_decay**i.")
    # valid_rows by measurement (docs/algorithms.md, "Recipe choices measured"): higher held-out τ than
    # the reference's normaliser on the tiny target (+4.1%, 2 seeds) and on SmolLM2 (+1.1%) at equal budgets.
    loss_convention: Literal["reference", "valid_rows"] = Field(
        "valid_rows",
        description="TTT loss masking and normalisation. 'reference' (DeepSpec/SpecForge): step i at position t counts "
        "where loss_mask[t+i] is set (the last token excluded), summed and divided by B·T. 'valid_rows': where every "
        "predicted token up to step i is supervised, averaged over those rows.",
    )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(ttt_length=4, num_layers=1),
        "paper": dict(ttt_length=7, num_layers=1),
    }

    def default_k(self) -> int:
        return self.ttt_length

    def draft_params(self) -> dict[str, int | float | str | bool]:
        return {"ttt_length": self.ttt_length}


@DRAFTS.register("eagle3")
class Eagle3Draft(DraftModel):
    algo = "eagle3"
    spec_class = Eagle3Spec

    def __init__(self, draft_spec, target_spec, target_config, embed_weight, lm_head_weight):
        super().__init__(draft_spec, target_spec, target_config, embed_weight, lm_head_weight)
        h, fam = self.hidden_size, self.family
        self.layer_config = cfg = draft_layer_config(target_config, draft_spec.num_layers, draft_spec.intermediate_size)
        eps = getattr(cfg, "rms_norm_eps", 1e-6)
        self.fusion = FeatureFusion(fam, len(self.layer_ids), h, eps, norm=False)
        self.hidden_norm = fam.rms_norm(h, eps=eps)
        self.layers = nn.ModuleList(
            [DraftLayer(fam, cfg, i, in_features=2 * h if i == 0 else None) for i in range(draft_spec.num_layers)]
        )
        self.norm = fam.rms_norm(h, eps=eps)
        self.rotary = Rotary(fam, cfg)
        self.init_draft_vocab(draft_spec.draft_vocab_size)
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._pending: torch.Tensor | None = None
        self._n = 0

    def _logits(self, g: torch.Tensor) -> torch.Tensor:
        """Draft logits (…, Vd or V) of layer outputs g (…, H)."""
        return self.vocab_logits(self.norm(g))

    # -- one draft forward over Q positions ----------------------------------------------------
    def _step(self, emb, hidden, rope, mask, prefix):
        """emb/hidden (B, Q, H) → (output (B, Q, H), each layer's new (k, v))."""
        first = self.layers[0]
        a = torch.cat([first.input_norm(emb), self.hidden_norm(hidden)], dim=-1)
        x, kv = first(hidden, rope, mask, None if prefix is None else prefix[0], attn_input=a)
        kvs = [kv]
        for i, layer in enumerate(self.layers[1:], start=1):
            x, kv = layer(x, rope, mask, None if prefix is None else prefix[i])
            kvs.append(kv)
        return x, kvs

    # -- training -------------------------------------------------------------------------------
    def _ttt(self, batch: DraftBatch):
        """Yield (step i, outputs (B, T, H)) of the training-time-test unroll."""
        ids = batch.input_ids
        b, t = ids.shape
        pos = torch.arange(t, device=ids.device)
        causal = pos[:, None] >= pos[None, :]
        diag = torch.eye(t, dtype=torch.bool, device=ids.device)
        hidden, prefix = self.fusion(batch.aux_hidden), None  # (B, T, H)
        for i in range(self.spec.ttt_length):
            in_ids = ids.gather(1, (pos + 1 + i).clamp(max=t - 1)[None].expand(b, t))  # x_{t+1+i}
            rope = self.rotary(hidden, (pos + i)[None].expand(b, t))
            mask = torch.cat([causal] + [diag] * i, dim=1)[None, None]  # (1, 1, T, (i+1)T)
            out, kvs = self._step(self.embed(in_ids), hidden, rope, mask, prefix)
            prefix = cat_kv(prefix, kvs)
            yield i, out
            hidden = out

    @torch.no_grad()
    def ttt_logits(self, batch: DraftBatch) -> torch.Tensor:
        """Draft logits over the target vocabulary (B, T, steps, V): step i at t predicts x_{t+2+i}."""
        outs = []
        for _, out in self._ttt(batch):
            outs.append(self.full_vocab_logits(self._logits(out).float()))
        return torch.stack(outs, 2)

    def teacher_forced_logits(self, batch: DraftBatch, anchors: torch.Tensor) -> torch.Tensor:
        # Anchor a is read at position a − 1 (features h_{a−1} with the embedding of x_a).
        logits = self.ttt_logits(batch)  # (B, T, S, V)
        rows = (anchors - 1)[..., None, None].expand(-1, -1, *logits.shape[2:])
        return logits.gather(1, rows)  # (B, N, S, V)

    def _loss_rows(
        self, lm: torch.Tensor, lengths: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, list[float]]:
        """Which (position, step) rows enter the loss (B, T, S) and each step's divisor.

        ``reference`` (DeepSpec ``modeling/eagle3/loss.py``, from SpecForge): step i at t counts where
        loss_mask[t+i] is set, the last real token excluded, and is divided by B·T whatever is
        masked. ``valid_rows``: the rows whose predicted tokens are all supervised (``valid``),
        averaged over them. Metrics use ``valid`` either way.
        """
        b, t, steps = valid.shape
        if self.spec.loss_convention == "valid_rows":
            return valid, [max(1, int(n)) for n in valid.sum((0, 1)).tolist()]
        mask = lm & (torch.arange(t, device=lm.device)[None] < lengths - 1)  # (B, T): the last token has no target
        at = torch.arange(t, device=lm.device)[:, None] + torch.arange(steps, device=lm.device)  # (T, S): t + i
        counted = mask.gather(1, at.clamp(max=t - 1).reshape(1, -1).expand(b, -1)).view(b, t, steps) & (at < t)
        return counted, [float(b * t)] * steps

    def forward_train(self, batch: DraftBatch) -> DraftLoss:
        ids, lm = batch.input_ids, batch.loss_mask.bool()
        b, t = ids.shape
        dev, steps, h = ids.device, self.spec.ttt_length, self.hidden_size
        pos = torch.arange(t, device=dev)
        lengths = batch.attention_mask.sum(-1, keepdim=True)  # (B, 1)
        # valid[:, :, i]: the step-i prediction at t (token t+2+i) is supervised, as are all before it.
        label = (pos[None, :, None] + 2 + torch.arange(steps, device=dev)).expand(b, t, steps)  # (B, T, S)
        sup = lm.gather(1, label.clamp(max=t - 1).reshape(b, -1)).view(b, t, steps)
        valid = torch.cumprod(((label < lengths[..., None]) & sup).long(), -1).bool()
        counted, normaliser = self._loss_rows(lm, lengths, valid)  # (B, T, S) rows in the loss, (S,) divisors
        weights = losses.step_weights(steps, self.spec.step_decay)
        correct, accept = torch.zeros(b * t, steps, device=dev), torch.zeros(b * t, steps, device=dev)
        loss = torch.zeros((), device=dev)
        final = batch.final_hidden.reshape(b * t, h)
        view = None
        if self.draft_head is not None or losses.kept_bytes(b * t, self.vocab_size) <= self.loss_memory_budget:
            # Every TTT step compares against the same target distributions, shifted: compute their
            # view once per batch instead of a full-vocabulary matmul per step (a reduced view is
            # small; a full one when it fits the budget — else each step recomputes its rows).
            view = losses.target_view(final, self.target_head.weight, self.softcap, self.draft_ids,
                                      batch.summary_rows(torch.arange(b * t, device=dev)))
        for i, out in self._ttt(batch):
            rows = counted[:, :, i].reshape(-1).nonzero().squeeze(-1)  # only supervised rows cost vocab work
            src = (torch.arange(b, device=dev)[:, None] * t + (pos + 1 + i).clamp(max=t - 1)).reshape(-1)[rows]
            terms = losses.vocab_terms(
                self._logits, (out.reshape(-1, h)[rows],), final[src] if view is None else None, self.target_head.weight,
                want=("soft_ce", "tv", "correct"), grad_terms=("soft_ce",), draft_ids=self.draft_ids,
                softcap=self.softcap, target=None if view is None else (view[0][src], view[1][src], view[2][src]),
                fused=self.fused_losses, memory_budget=self.loss_memory_budget,
            )
            loss = loss + float(weights[i]) * terms["soft_ce"].sum() / normaliser[i]
            correct[rows, i] = terms["correct"]
            accept[rows, i] = 1.0 - terms["tv"].detach()
        metrics = block_metrics(correct, accept, valid.reshape(b * t, steps))
        metrics["loss"] = loss.detach()
        return DraftLoss(loss=loss, metrics=metrics)

    # -- decoding -------------------------------------------------------------------------------
    def _extend(self, next_ids: torch.Tensor, hidden: torch.Tensor) -> None:
        """Append m positions (inputs embed(next_ids) (B, m) and fused features (B, m, H)) to the cache."""
        m = next_ids.shape[1]
        if m == 0:
            return
        past = 0 if self._kv is None else self._kv[0][0].shape[2]
        pos = torch.arange(past, past + m, device=hidden.device)
        rope = self.rotary(hidden, pos[None].expand(hidden.shape[0], m))
        mask = (torch.arange(past + m, device=hidden.device)[None, :] <= pos[:, None])[None, None]
        _, kvs = self._step(self.embed(next_ids), hidden, rope, mask, self._kv)
        self._kv = cat_kv(self._kv, kvs)

    @torch.no_grad()
    def start(self, input_ids: torch.Tensor, aux_hidden: torch.Tensor) -> None:
        """Reset and ingest a prompt: input_ids (B, n) with their target features aux_hidden (B, n, K, H).

        After it: the cache holds positions 0..n−2 (position t reads x_{t+1} and h_t); h_{n−1}
        waits for the next token, which ``propose`` receives as ``last_token``.
        """
        self._kv, self._n = None, 0
        fused = self.fusion(aux_hidden)
        self._extend(input_ids[:, 1:], fused[:, :-1])
        self._pending, self._n = fused[:, -1:], input_ids.shape[1]

    @torch.no_grad()
    def commit(self, tokens: torch.Tensor, aux_hidden: torch.Tensor) -> None:
        """Ingest tokens the target has read and kept: tokens (B, m) = [last_token, accepted drafts]
        with their target features aux_hidden (B, m, K, H). The cache then covers positions up to
        n+m−2 and the features of the newest token wait for the next ``last_token``.
        """
        assert self._pending is not None, "call start() before commit()"
        fused = self.fusion(aux_hidden)
        hidden = torch.cat([self._pending, fused[:, :-1]], dim=1)
        self._extend(tokens, hidden)
        self._pending, self._n = fused[:, -1:], self._n + tokens.shape[1]

    @torch.no_grad()
    def propose(self, last_token: torch.Tensor, k: int, temperature: float = 0.0,
                generator: torch.Generator | None = None, policy: Any = None) -> Proposal:
        """Draft k tokens after ``last_token`` (B,), fewer when ``policy`` refuses a slot (drafting
        stops there). The draft's own scratch entries are dropped on return."""
        if self._pending is None:
            raise RuntimeError("call start() before propose()")
        b = last_token.shape[0]
        kv, hidden, tok = self._kv, self._pending, last_token.view(b, 1)
        past = 0 if kv is None else kv[0][0].shape[2]
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        dists: list[torch.Tensor | None] = []
        confs: list[torch.Tensor] = []
        for i in range(k):
            pos = torch.full((b, 1), past + i, device=hidden.device)
            mask = torch.ones(1, 1, 1, past + i + 1, dtype=torch.bool, device=hidden.device)
            out, kvs = self._step(self.embed(tok), hidden, self.rotary(hidden, pos), mask, kv)
            kv = cat_kv(kv, kvs)
            tok, p, dist, conf = self.sample_tokens(self._logits(out[:, 0]), temperature, generator)
            if policy is not None and policy.length([*(c.item() for c in confs), conf.item()]) <= i:
                break  # this slot is refused: no further draft step
            tokens.append(tok)
            probs.append(p)
            dists.append(dist)
            confs.append(conf)
            hidden, tok = out, tok.view(b, 1)
        if not tokens:
            return Proposal.empty(last_token.shape[0], self.vocab_size, last_token.device, temperature > 0)
        return Proposal.from_steps(tokens, probs, dists, confs)
