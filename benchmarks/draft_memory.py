"""Memory of one draft training step at Qwen3-4B shapes, from tensors saved for backward.

Usage: python benchmarks/draft_memory.py dspark 256 512 1024   (sequence lengths; anchors = T/8)
       python benchmarks/draft_memory.py chunk                 (one 512-row loss chunk)

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
    if algo != "eagle3":
        spec.draft.num_anchors = t // 8
    w = (torch.randn(QWEN3_4B.vocab_size, QWEN3_4B.hidden_size) * 0.02).bfloat16()
    d = build_draft(spec, QWEN3_4B, w, w)
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


if __name__ == "__main__":
    if sys.argv[1] == "chunk":
        print(f"chunk saved_bytes={chunk()}")
    else:
        for t in map(int, sys.argv[2:]):
            print(f"{sys.argv[1]} T={t} anchors={t // 8} saved_bytes={step(sys.argv[1], t)}", flush=True)
