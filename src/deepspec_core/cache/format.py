"""On-disk layout of a feature cache (docs/cache.md), version 1.

```
<dir>/manifest.json            written last and atomically: its presence means "complete"
<dir>/index.bin                16-byte header + one 24-byte record per sample, in sample order
<dir>/plan.json                what is being written (resume refuses a different plan)
<dir>/shards/shard-NNNNN.bin   concatenated sample records
<dir>/shards/shard-NNNNN.json  written atomically once the shard is complete (resume state)
```

A sample record is ``<II`` (aux bytes, final bytes), then ``input_ids`` as int32 (T·4 bytes),
``loss_mask`` as uint8 (T bytes), then the codec's aux and final payloads; in version 2 (a cache
whose manifest has ``target_summary``) then the target's summary of each position: the logsumexp
of its full-vocabulary logits as float32 (T·4 bytes) and their argmax as int32 (T·4 bytes), so a
draft with a reduced vocabulary never needs the full-vocabulary product in training. Version 1
caches (no summary) are still read. An index record is
(shard, offset, length, seq_len, crc32 of the record), so a reader needs one ``pread`` per sample
and can detect a corrupt record without hashing the whole shard.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepspec_core.errors import CacheError

FORMAT_NAME = "deepspec-feature-cache"
FORMAT_VERSION = 2  # written when the records carry the target summary; 1 otherwise
READABLE_VERSIONS = (1, 2)

MANIFEST = "manifest.json"
INDEX = "index.bin"
PLAN = "plan.json"
SHARDS = "shards"

INDEX_MAGIC = b"DSPCIDX1"
INDEX_HEADER = struct.Struct("<8sII")  # magic, format version, record size
INDEX_DTYPE = np.dtype(
    [("shard", "<u4"), ("offset", "<u8"), ("length", "<u4"), ("seq_len", "<u4"), ("crc32", "<u4")]
)
RECORD_HEADER = struct.Struct("<II")  # aux payload bytes, final payload bytes

# Per token beyond the features: int32 id + uint8 loss mask (+ SUMMARY_BYTES in version 2).
TOKEN_BYTES = 5
SUMMARY_BYTES = 8  # float32 logsumexp + int32 argmax of the target's logits


def shard_name(j: int) -> str:
    return f"shard-{j:05d}.bin"


def shard_meta_name(j: int) -> str:
    return f"shard-{j:05d}.json"


# -- sample records ------------------------------------------------------------------------------


def pack_record(
    input_ids: torch.Tensor, loss_mask: torch.Tensor, aux: bytes, final: bytes,
    summary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> bytes:
    """One sample's record; ``summary`` = the target's (logsumexp (T,), argmax (T,)) in version 2."""
    ids = input_ids.detach().to("cpu", torch.int32).numpy().astype("<i4", copy=False).tobytes()
    mask = loss_mask.detach().to("cpu", torch.uint8).numpy().tobytes()
    tail = b""
    if summary is not None:
        lse, top = summary
        tail = (lse.detach().to("cpu", torch.float32).numpy().astype("<f4", copy=False).tobytes()
                + top.detach().to("cpu", torch.int32).numpy().astype("<i4", copy=False).tobytes())
    return RECORD_HEADER.pack(len(aux), len(final)) + ids + mask + aux + final + tail


def unpack_record(
    blob: bytes, seq_len: int, summary: bool = False
) -> tuple[torch.Tensor, torch.Tensor, bytes, bytes, tuple[torch.Tensor, torch.Tensor] | None]:
    """→ input_ids (T,) int64, loss_mask (T,) bool, aux payload, final payload, and with
    ``summary`` (a version-2 cache) the target's logsumexp (T,) float32 and argmax (T,) int64."""
    n_aux, n_final = RECORD_HEADER.unpack_from(blob)
    o = RECORD_HEADER.size
    ids = torch.from_numpy(np.frombuffer(blob, "<i4", seq_len, o).astype(np.int64))
    o += 4 * seq_len
    mask = torch.from_numpy(np.frombuffer(blob, np.uint8, seq_len, o).astype(bool))
    o += seq_len
    if o + n_aux + n_final + (SUMMARY_BYTES * seq_len if summary else 0) != len(blob):
        raise ValueError("record length does not match its header")
    aux, final = blob[o : o + n_aux], blob[o + n_aux : o + n_aux + n_final]
    if not summary:
        return ids, mask, aux, final, None
    o += n_aux + n_final
    lse = torch.from_numpy(np.frombuffer(blob, "<f4", seq_len, o).astype(np.float32))
    top = torch.from_numpy(np.frombuffer(blob, "<i4", seq_len, o + 4 * seq_len).astype(np.int64))
    return ids, mask, aux, final, (lse, top)


def record_crc(blob: bytes) -> int:
    return zlib.crc32(blob) & 0xFFFFFFFF


# -- index ---------------------------------------------------------------------------------------


def index_bytes(records: np.ndarray, version: int = FORMAT_VERSION) -> bytes:
    return INDEX_HEADER.pack(INDEX_MAGIC, version, INDEX_DTYPE.itemsize) + records.astype(INDEX_DTYPE).tobytes()


def read_index(path: Path) -> np.ndarray:
    data = path.read_bytes() if path.is_file() else b""
    if len(data) < INDEX_HEADER.size:
        raise CacheError(f"{path} is missing or truncated", "rebuild the cache with `deepspec data cache`")
    magic, version, size = INDEX_HEADER.unpack_from(data)
    body = len(data) - INDEX_HEADER.size
    if magic != INDEX_MAGIC or size != INDEX_DTYPE.itemsize or body % size:
        raise CacheError(f"{path} is not a deepspec cache index (or is corrupt)", "rebuild the cache")
    if version not in READABLE_VERSIONS:
        raise CacheError(f"{path} has format version {version}; this deepspec reads {_readable()}")
    return np.frombuffer(data, INDEX_DTYPE, offset=INDEX_HEADER.size)


def _readable() -> str:
    return " and ".join(map(str, READABLE_VERSIONS))


# -- manifest ------------------------------------------------------------------------------------


def read_manifest(cache_dir: Path) -> dict[str, Any]:
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        hint = (
            "the cache is incomplete: rerun the same `deepspec data cache` command to finish it"
            if (Path(cache_dir) / PLAN).is_file()
            else "build it with `deepspec data cache SPEC`, or set cache.online = true"
        )
        raise CacheError(f"no feature cache at {cache_dir} ({MANIFEST} not found)", hint)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CacheError(f"{path} is not valid JSON: {err}", "rebuild the cache") from err
    if manifest.get("format") != FORMAT_NAME:
        raise CacheError(f"{path} is not a deepspec feature cache manifest")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise CacheError(
            f"{path} has cache format version {manifest.get('format_version')}; this deepspec reads {_readable()}",
            "rebuild the cache with this version of deepspec",
        )
    return manifest


def manifest_mismatches(manifest: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """One line per field where the cache differs from what the run expects (None = not checked)."""
    have = {
        "target.model": manifest["target"]["model"],
        "target.revision": manifest["target"].get("revision"),
        "target.layer_ids": manifest["layer_ids"],
        "hidden_size": manifest["hidden_size"],
        "tokenizer_hash": manifest["target"].get("tokenizer_hash"),
        "chat_template_hash": manifest["target"].get("chat_template_hash"),
        "target.thinking": manifest.get("thinking"),
        "data.max_length": manifest.get("max_length"),
        "loss_mask_version": manifest.get("loss_mask_version"),
        "data.drop_truncated": manifest.get("drop_truncated", False),
    }
    lines = []
    for key, want in expected.items():
        if want is not None and have.get(key) != want:
            lines.append(f"cache {key} is {have.get(key)!r} but the run expects {want!r}")
    return lines


def raw_bf16_bytes_per_token(hidden_size: int, num_layers: int) -> int:
    """The reference layout: int32 id + two uint8 masks + (K + 1) bf16 vectors (docs/reference.md, the cache problem)."""
    return 4 + 2 + 2 * hidden_size * (num_layers + 1)


def describe(manifest: dict[str, Any]) -> dict[str, Any]:
    """Summary numbers for `deepspec data inspect`."""
    tokens = manifest["counts"]["tokens"]
    raw = tokens * raw_bf16_bytes_per_token(manifest["hidden_size"], len(manifest["layer_ids"]))
    total = sum(s["bytes"] for s in manifest["shards"])
    return {
        "samples": manifest["counts"]["samples"],
        "tokens": tokens,
        "bytes": total,
        "raw_bf16_bytes": raw,
        "ratio_vs_raw_bf16": raw / total if total else float("nan"),
        "bytes_per_token": total / tokens if tokens else float("nan"),
    }
