"""Memory of one draft training step at Qwen3-4B shapes, from tensors saved for backward.

Usage: python benchmarks/draft_memory.py dspark 256 512 1024   (sequence lengths; anchors = T/8)
       python benchmarks/draft_memory.py chunk                 (one 512-row loss chunk)
       python benchmarks/draft_memory.py table [ALGO ...]      (peak per algorithm at T = 4,096:
                                                                eager / fused losses × dense / flex attention)

Runs on CPU under bf16 autocast (what training uses on GPU) with random weights of the recipe's
shapes, and counts the bytes of every tensor autograd saves (parameters and inputs excluded).
docs/algorithms.md fits these to a + bT + cT² and adds parameters, gradients and AdamW states.
"""

from __future__ import annotations

import functools
import sys

import torch
from transformers import Qwen3Config

from deepspec_core import losses
from deepspec_core.drafts import build_draft
from deepspec_core.drafts.base import DraftBatch
from deepspec_core.drafts.heads import MarkovHead
from deepspec_core.spec import load_spec

QWEN3_4B = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)


def saved_bytes(run, exclude: set[int]) -> int:
    """Bytes of the tensors autograd saves while ``run()`` executes (each storage once)."""
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in exclude:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(saved.values())


def step(algo: str, t: int) -> int:
    spec = load_spec(f"{algo}-qwen3-4b")
    if spec.draft.max_k() is not None:
        spec.draft.num_anchors = t // 8
    w = (torch.randn(QWEN3_4B.vocab_size, QWEN3_4B.hidden_size) * 0.02).bfloat16()
    d = build_draft(spec, QWEN3_4B, w, w)
    d.loss_memory_budget = 0  # the regime of T = 4,096 (12 B × rows × 152k columns is far over 1 GiB)
    h = QWEN3_4B.hidden_size
    batch = DraftBatch(torch.randint(0, 151000, (1, t)), torch.ones(1, t, dtype=torch.long),
                       torch.ones(1, t, dtype=torch.bool), torch.randn(1, t, 5, h).bfloat16(), torch.randn(1, t, h).bfloat16())
    exclude = {p.untyped_storage().data_ptr() for p in d.parameters()}
    exclude |= {batch.aux_hidden.untyped_storage().data_ptr(), batch.final_hidden.untyped_storage().data_ptr()}
    return saved_bytes(lambda: d.forward_train(batch), exclude)


def chunk(rows: int = losses.DEFAULT_CHUNK_ROWS) -> int:
    v, h = QWEN3_4B.vocab_size, QWEN3_4B.hidden_size
    w = (torch.randn(v, h) * 0.02).bfloat16()
    head = MarkovHead(v, 256)
    x, e = torch.randn(rows, h, requires_grad=True), torch.randn(rows, 256, requires_grad=True)

    def logits(x, e):
        return torch.nn.functional.linear(x.to(w.dtype), w).float() + head.bias(e).float()

    target = functools.partial(losses.target_view, torch.randn(rows, h).bfloat16(), w, None, None)
    args = (logits, ("ce", "tv", "correct"), ("ce", "tv"), None, target, torch.randint(0, v, (rows,)), False, x, e)
    exclude = {w.untyped_storage().data_ptr(), head.proj.weight.untyped_storage().data_ptr()}
    return saved_bytes(lambda: losses._terms_of_chunk(*args), exclude)


def _fit(ts: list[int], ys: list[int]) -> list[float]:
    """(c, b, a) of a + bT + cT² through three measurements."""
    import numpy as np

    return [float(x) for x in np.polyfit(ts, ys, 2)]


def table(algos: list[str], t: int = 4096, measure_at: tuple[int, ...] = (256, 512, 1024)) -> None:
    """Peak of one training step per algorithm at Qwen3-4B shapes, in GiB — computed, not measured on
    CUDA. Parameter-side terms are exact (16 B per trainable parameter: fp32 weights, gradients and
    two AdamW moments; the frozen bf16 embedding; the bf16 batch). Activations saved for backward are
    measured on CPU at ``measure_at`` and fitted to a + bT + cT²; the cT² term (the boolean masks,
    and whatever the attention saves per score) is what flex attention's block masks remove, so the
    flex columns drop it. The loss chunk's backward is measured for the eager losses (saved tensors
    + at most 3.5 fp32 [512, V] gradients) and computed for the fused kernels, which keep the chunk's
    bf16 draft logits, fp32 target view and bf16 logit gradients plus the transient fp32 target
    logits: 12 B × 512 rows × V."""
    from deepspec_core.spec import algorithms

    gib, v, h = 2**30, QWEN3_4B.vocab_size, QWEN3_4B.hidden_size
    rows = losses.DEFAULT_CHUNK_ROWS
    eager_chunk = chunk() + 3.5 * 4 * rows * v
    fused_chunk = 12 * rows * v
    frozen, batch = v * h * 2, t * 6 * h * 2
    print(f"peak GiB of one training step at T = {t} (computed from CPU measurements; no CUDA here)")
    print(f"{'algo':8} {'params':>12} {'eager+dense':>12} {'eager+flex':>11} {'fused+dense':>12} {'fused+flex':>11}")
    for algo in algos or algorithms():
        spec = load_spec(f"{algo}-qwen3-4b")
        with torch.device("meta"):
            d = build_draft(spec, QWEN3_4B, torch.empty(v, h), torch.empty(v, h))
        p = d.num_trainable_parameters()
        c, b, a = _fit(list(measure_at), [step(algo, n) for n in measure_at])
        sparse = 16 * p + frozen + batch + a + b * t
        dense = sparse + c * t * t
        cells = [dense + eager_chunk, sparse + eager_chunk, dense + fused_chunk, sparse + fused_chunk]
        print(f"{algo:8} {p:12,d} " + " ".join(f"{x / gib:11.2f}" for x in cells), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "table":
        table(sys.argv[2:])
    elif sys.argv[1] == "chunk":
        print(f"chunk saved_bytes={chunk()}")
    else:
        for t in map(int, sys.argv[2:]):
            print(f"{sys.argv[1]} T={t} anchors={t // 8} saved_bytes={step(sys.argv[1], t)}", flush=True)
