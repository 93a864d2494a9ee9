"""Tiny random targets and batches for the draft tests (hidden 64, vocab 128: fast on a CPU)."""

from __future__ import annotations

import torch
from transformers import Qwen3Config

from deepspec_core.drafts import build_draft, collate_samples
from deepspec_core.spec import RunSpec

VOCAB, HIDDEN, MASK_ID = 128, 64, 127


def tiny_config(layers: int = 2) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
    )


def frozen_weights(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(VOCAB, HIDDEN, generator=g), torch.randn(VOCAB, HIDDEN, generator=g) / HIDDEN**0.5


def make_draft(algo: str, seed: int = 0, **draft_kw):
    draft = {"algo": algo, "num_layers": 1}
    draft.update(draft_kw)
    spec = RunSpec.model_validate({"target": {"layer_ids": [0, 1], "mask_token_id": MASK_ID}, "draft": draft})
    embed, head = frozen_weights()
    torch.manual_seed(seed)
    return build_draft(spec, tiny_config(), embed, head)


def make_batch(lengths=(24, 17), seed: int = 0, peaked: bool = True):
    """Random tokens and features; the target distribution at t peaks on x_{t+1} (a learnable target)."""
    g = torch.Generator().manual_seed(seed)
    _, head = frozen_weights()
    samples = []
    for n in lengths:
        ids = torch.randint(0, VOCAB - 1, (n,), generator=g)
        nxt = torch.cat([ids[1:], ids[:1]])
        final = head[nxt] * (40.0 if peaked else 1.0) + 0.1 * torch.randn(n, HIDDEN, generator=g)
        loss_mask = torch.ones(n, dtype=torch.bool)
        loss_mask[: n // 4] = False  # a "prompt" that is not supervised
        samples.append(dict(input_ids=ids, loss_mask=loss_mask, aux_hidden=torch.randn(n, 2, HIDDEN, generator=g),
                            final_hidden=final))
    return collate_samples(samples)


def reference_rows(draft, batch, anchors=None, keep=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(correct, accept, valid), each (rows, k), recomputed from the teacher-forced logits.

    Eagle3 (``anchors`` None): row (b, t), step i predicts x_{t+2+i} against the target at t+1+i.
    Block drafts: row (b, anchor a), slot j predicts x_{a+1+j} against the target at a+j. A
    prediction is valid when it and every one before it in its row are supervised (inside the
    sequence, loss_mask set, the block kept). correct: draft argmax == target argmax; accept: 1 − TV.
    """
    ids, lm, lengths = batch.input_ids, batch.loss_mask, batch.attention_mask.sum(-1)
    b, t = ids.shape
    p_all = torch.softmax(batch.final_hidden @ draft.target_head.weight.T, -1)  # (B, T, V)
    if anchors is None:
        q = torch.softmax(draft.ttt_logits(batch), -1)  # (B, T, S, V)
        k = q.shape[2]
        label = torch.arange(t)[:, None] + 2 + torch.arange(k)  # (T, S)
        src = (label - 1).clamp(max=t - 1)
        p = p_all[:, src]  # (B, T, S, V)
        label = label.expand(b, t, k)
        keep = torch.ones(b, t, dtype=torch.bool)
    else:
        with torch.no_grad():
            q = torch.softmax(draft.block_logits(batch, anchors), -1)  # (B, N, γ, V)
        k = q.shape[2]
        label = anchors[..., None] + 1 + torch.arange(k)  # (B, N, γ)
        src = (label - 1).clamp(max=t - 1)
        p = torch.stack([p_all[i, src[i]] for i in range(b)])
        keep = torch.ones_like(anchors, dtype=torch.bool) if keep is None else keep
    inside = label < lengths.view(b, *[1] * (label.dim() - 1))
    sup = inside & lm.gather(1, label.clamp(max=t - 1).reshape(b, -1)).view_as(label) & keep[..., None]
    valid = torch.cumprod(sup.long(), -1).bool()
    correct = (q.argmax(-1) == p.argmax(-1)).float() * valid
    accept = (1 - 0.5 * (q - p).abs().sum(-1)) * valid
    return correct.reshape(-1, k), accept.reshape(-1, k), valid.reshape(-1, k)
