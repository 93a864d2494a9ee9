"""Shared builders for the cache tests: a small random Qwen3 and synthetic token samples.

Also imported by ``resume_worker.py``, which runs in a subprocess, so nothing here uses fixtures.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from deepspec_core.cache.online import compute_features
from deepspec_core.cache.writer import CacheConfig, write_cache

LAYER_IDS = [0, 2]
HIDDEN = 32
MIN_LOSS = 3


def make_model(seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=97, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
    )
    return Qwen3ForCausalLM(cfg).eval()


def make_samples(n: int = 30, seed: int = 1) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Random sequences of 5–39 tokens; about one in ten has fewer than MIN_LOSS supervised tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = int(torch.randint(5, 40, (1,), generator=g))
        ids = torch.randint(0, 97, (t,), generator=g)
        mask = torch.rand(t, generator=g) > (0.97 if i % 10 == 3 else 0.5)
        out.append((f"conv-{i}", {"input_ids": ids, "loss_mask": mask}))
    return out


def make_config(codec: str = "fp8-zstd", shard_tokens: int = 100) -> CacheConfig:
    return CacheConfig(
        target={"model": "random-qwen3", "revision": None, "tokenizer_hash": "tok", "chat_template_hash": "tpl"},
        layer_ids=list(LAYER_IDS), hidden_size=HIDDEN, codec=codec, max_length=64, min_loss_tokens=MIN_LOSS,
        thinking=False, sources=[{"path": "synthetic", "sha256": "0"}], shard_tokens=shard_tokens,
    )


def features_fn(model, delay_s: float = 0.0):
    def fn(batch):
        if delay_s:
            import time

            time.sleep(delay_s)
        return compute_features(model, batch, LAYER_IDS)

    return fn


def write(out_dir: Path, codec: str = "fp8-zstd", n: int = 30, batch_size: int = 4, rank: int = 0,
          world_size: int = 1, delay_s: float = 0.0, model=None, **kw):
    return write_cache(
        out_dir, make_config(codec, kw.pop("shard_tokens", 100)), iter(make_samples(n)),
        features_fn(model or make_model(), delay_s), batch_size=batch_size, skipped=Counter(),
        rank=rank, world_size=world_size, **kw,
    )
