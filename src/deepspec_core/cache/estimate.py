"""Size planner for ``deepspec data cache --estimate``: bytes and shards before writing anything.

The arithmetic (docs/cache.md): per token a cache stores its id and loss mask (5 bytes) plus
K captured layers and the final hidden state, H values each:

    bytes/token = 5 + 8 + H · (K · aux_bytes_per_value + final_bytes_per_value)   (8: the target summary)

with bytes per value 2.0 for raw bf16 and, for compressed codecs, the value measured by
``benchmarks/cache_codecs.py`` (stored on each codec in ``codecs.py``). The reference layout
(docs/reference.md, the cache problem) stores 6 bytes of id and masks: 4 + 2 + 2·H·(K+1) = 30,726 bytes/token for
Qwen3-4B (H = 2560, K = 5), so 1.24e9 tokens need ~38.1 TB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepspec_core.cache import format as fmt
from deepspec_core.cache.codecs import CODECS, get_codec
from deepspec_core.errors import TargetError

# Used when the target's config cannot be fetched (offline): (hidden size, decoder layers).
KNOWN_TARGETS = {
    "Qwen/Qwen3-4B": (2560, 36),
    "Qwen/Qwen3-8B": (4096, 36),
    "Qwen/Qwen3-14B": (5120, 40),
}


def bytes_per_token(hidden_size: int, num_layers: int, codec: str) -> float:
    c = get_codec(codec)
    return fmt.TOKEN_BYTES + fmt.SUMMARY_BYTES + hidden_size * (num_layers * c.aux_bytes_per_value + c.final_bytes_per_value)


def estimate_bytes(hidden_size: int, num_layers: int, num_tokens: float, codec: str) -> int:
    """Bytes of a cache of ``num_tokens`` tokens with ``num_layers`` captured layers of width ``hidden_size``."""
    return int(round(bytes_per_token(hidden_size, num_layers, codec) * num_tokens))


@dataclass
class CodecEstimate:
    codec: str
    bytes_per_token: float
    total_bytes: int
    ratio_vs_raw_bf16: float
    shards: int
    lossless: bool


@dataclass
class Estimate:
    samples: int
    tokens: int
    hidden_size: int
    num_layers: int
    raw_bf16_bytes: int
    shard_size_mb: int
    extrapolated_from: int | None = None  # conversations tokenised when extrapolating
    skipped: dict[str, int] = field(default_factory=dict)
    rows: list[CodecEstimate] = field(default_factory=list)


def make_estimate(
    tokens: int,
    samples: int,
    hidden_size: int,
    num_layers: int,
    shard_size_mb: int,
    codecs: Sequence[str] | None = None,
) -> Estimate:
    """The table for ``tokens`` tokens: bytes/token, total and shard count per codec."""
    raw = tokens * fmt.raw_bf16_bytes_per_token(hidden_size, num_layers)
    est = Estimate(samples, tokens, hidden_size, num_layers, raw, shard_size_mb)
    for name in codecs or CODECS.names():
        total = estimate_bytes(hidden_size, num_layers, tokens, name)
        est.rows.append(CodecEstimate(
            codec=name,
            bytes_per_token=bytes_per_token(hidden_size, num_layers, name),
            total_bytes=total,
            ratio_vs_raw_bf16=raw / total if total else float("nan"),
            shards=max(1, math.ceil(total / (shard_size_mb * 1e6))),
            lossless=get_codec(name).lossless,
        ))
    return est


def target_dims(target_spec: Any) -> tuple[int, int]:
    """(hidden size, decoder layers) from the target's config, without loading weights."""
    from deepspec_core.targets import hf

    try:
        text = hf.text_config(hf.load_config(target_spec))
        return int(text.hidden_size), int(text.num_hidden_layers)
    except TargetError:
        if target_spec.model in KNOWN_TARGETS:  # the paper targets' sizes are known without the hub
            return KNOWN_TARGETS[target_spec.model]
        raise


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def estimate_cache(
    spec: Any,
    files: Sequence[str] | None = None,
    sample: int | None = None,
    tokens: int | None = None,
    codecs: Sequence[str] | None = None,
) -> Estimate:
    """Tokenise (all, or the first ``sample`` conversations and extrapolate by line count) and size."""
    from deepspec_core.data.tokenize import TokenizeStats, iter_tokenized
    from deepspec_core.errors import DataError
    from deepspec_core.targets import hf

    hidden, _ = target_dims(spec.target)
    num_layers = len(spec.target.layer_ids)
    if tokens is not None:
        return make_estimate(int(tokens), 0, hidden, num_layers, spec.cache.shard_size_mb, codecs)
    files = list(files or spec.data.train)
    if not files:
        raise DataError("no training files", "set data.train in the spec, pass --in FILE, or give --tokens N")
    for f in files:
        if not Path(f).expanduser().is_file():
            raise DataError(f"training file {f} does not exist", "check data.train or --in")
    tok = hf.load_tokenizer(spec.target.model, spec.target.revision, spec.target.chat_template,
                            spec.target.trust_remote_code)
    stats = TokenizeStats()
    n_samples = n_tokens = 0
    for f in files:
        left = None if sample is None else sample - stats.seen
        if left is not None and left <= 0:
            break
        for _, s in iter_tokenized(f, tok, spec.data.max_length, spec.target.thinking,
                                   spec.data.min_loss_tokens, stats=stats, limit=left,
                                   drop_truncated=spec.data.drop_truncated):
            n_samples += 1
            n_tokens += len(s.input_ids)
    extrapolated = None
    total_lines = sum(_count_lines(Path(f).expanduser()) for f in files) if sample is not None else 0
    if sample is not None and stats.seen < total_lines:
        scale = total_lines / max(stats.seen, 1)
        extrapolated, n_samples, n_tokens = stats.seen, round(n_samples * scale), round(n_tokens * scale)
    est = make_estimate(n_tokens, n_samples, hidden, num_layers, spec.cache.shard_size_mb, codecs)
    est.extrapolated_from = extrapolated
    est.skipped = dict(stats.skipped)
    return est
