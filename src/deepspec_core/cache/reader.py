"""Random-access reader of a feature cache: a ``torch.utils.data.Dataset`` of sample dicts.

File handles are opened lazily and per process (keyed by pid), so the dataset can be handed to
DataLoader workers, which then decode in parallel. Each read is one ``os.pread`` (no shared file
position) checked against the record's crc32, so a corrupt record fails loudly, naming its
shard, without hashing whole shards on every open; :meth:`FeatureCache.verify` checks every
shard's sha256 against the manifest.

Samples (docs/cache.md): ``input_ids`` (T,) int64, ``loss_mask`` (T,) bool, ``aux_hidden`` (T, K, H)
bf16, ``final_hidden`` (T, H) bf16 — bf16 for every codec (lossy codecs decode to bf16) — and, from
a version-2 cache while :attr:`FeatureCache.use_summary` is set, ``target_lse`` (T,) fp32 and
``target_top`` (T,) int64: the target's full-vocabulary logsumexp and argmax at each position.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepspec_core.cache import format as fmt
from deepspec_core.cache.codecs import get_codec
from deepspec_core.data.tokenize import LOSS_MASK_VERSION
from deepspec_core.errors import CacheError
from deepspec_core.io import sha256_file

_REBUILD = "rebuild the cache for this spec with `deepspec data cache SPEC`, or point cache.path at the right one"


def expected_from_spec(spec: Any) -> dict[str, Any]:
    """What a run spec pins about its cache (fields the manifest must match)."""
    return {
        "target.model": spec.target.model,
        "target.revision": spec.target.revision,
        "target.layer_ids": list(spec.target.layer_ids),
        "target.thinking": spec.target.thinking,
        "data.max_length": spec.data.max_length,
        "loss_mask_version": LOSS_MASK_VERSION,  # a cache from an older deepspec masks differently
        "data.drop_truncated": spec.data.drop_truncated,
    }


def stale_reasons(manifest: dict[str, Any], spec: Any) -> list[str]:
    """What changed since the cache was built: the target's weight files (by fingerprint), the
    training files it was built from (size and sha256, where they still exist), or the list of
    training files the run names. Empty when nothing did."""
    from deepspec_core.targets.hf import weights_fingerprint

    reasons = []
    built = manifest["target"].get("weights_fingerprint")
    now = weights_fingerprint(spec.target.model) if built is not None else None
    if built is not None and now is not None and now != built:
        reasons.append(f"the weights of target {spec.target.model} changed since it was built")
    sources = manifest.get("sources", [])
    for src in sources:
        path = Path(src["path"]).expanduser()
        if path.is_file() and (path.stat().st_size != src["bytes"] or sha256_file(path) != src["sha256"]):
            reasons.append(f"training file {src['path']} changed since it was built")
    wanted = [*map(str, spec.data.train), *map(str, spec.data.eval)]
    if sources and spec.data.train and sorted(wanted) != sorted(src["path"] for src in sources):
        missing = [w for w in wanted if not Path(w).expanduser().exists()]
        reasons.append(f"it was built from {[s['path'] for s in sources]}, the run reads {wanted}"
                       + (f" (of which {', '.join(missing)} does not exist)" if missing else ""))
    return reasons


class FeatureCache(Dataset):
    """``FeatureCache(dir, spec)[i]`` → the i-th sample dict, decoded.

    With ``spec`` (and, when the caller has them, the target's ``hidden_size`` and
    ``tokenizer_hash``) the manifest is checked on open; every mismatch is one line of the
    CacheError. ``verify=True`` also checks every shard's sha256 on open.
    """

    def __init__(
        self,
        cache_dir: Path | str,
        spec: Any = None,
        *,
        hidden_size: int | None = None,
        tokenizer_hash: str | None = None,
        verify: bool = False,
    ):
        self.dir = Path(cache_dir)
        self.manifest = fmt.read_manifest(self.dir)
        self.codec = get_codec(self.manifest["codec"])
        self.index = fmt.read_index(self.dir / fmt.INDEX)
        self.shards = self.manifest["shards"]
        self.num_layers = len(self.manifest["layer_ids"])
        self.hidden_size = int(self.manifest["hidden_size"])
        if len(self.index) != self.manifest["counts"]["samples"]:
            raise CacheError(
                f"{self.dir / fmt.INDEX} has {len(self.index)} records but the manifest counts "
                f"{self.manifest['counts']['samples']} samples", "rebuild the cache",
            )
        expected = expected_from_spec(spec) if spec is not None else {}
        expected.update({"hidden_size": hidden_size, "tokenizer_hash": tokenizer_hash})
        lines = fmt.manifest_mismatches(self.manifest, expected)
        if lines:
            raise CacheError(f"feature cache {self.dir} does not match the run:\n  " + "\n  ".join(lines), _REBUILD)
        stale = stale_reasons(self.manifest, spec) if spec is not None and not spec.cache.allow_stale else []
        if stale:
            raise CacheError(
                f"feature cache {self.dir} is stale: " + "; ".join(stale),
                "rebuild it (`deepspec data cache SPEC`), or pass --allow-stale-cache to train on it anyway",
            )
        # The head the summary was computed with ({"dtype", "softcap"}), None in a version-1 cache.
        self.target_summary: dict[str, Any] | None = self.manifest.get("target_summary")
        self.use_summary = self.target_summary is not None
        self._pid: int | None = None
        self._fds: dict[int, int] = {}
        if verify:
            self.verify()

    # -- sizes -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample, for length-grouped batching."""
        return self.index["seq_len"].astype(np.int64)

    # -- reading ---------------------------------------------------------------------------------
    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker must not share the parent's descriptors
            self._pid, self._fds = os.getpid(), {}
        fd = self._fds.get(shard)
        if fd is None:
            info = self.shards[shard]
            path = self.dir / fmt.SHARDS / info["name"]
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise CacheError(f"shard {info['name']} of {self.dir} is missing", "rebuild the cache") from None
            size = os.fstat(fd).st_size
            if size != info["bytes"]:
                os.close(fd)
                raise CacheError(
                    f"shard {info['name']} of {self.dir} has {size} bytes, the manifest says {info['bytes']} (truncated?)",
                    "rebuild the cache (`deepspec data inspect DIR --verify` checks all shards)",
                )
            self._fds[shard] = fd
        return fd

    def read_record(self, i: int) -> bytes:
        rec = self.index[i]
        shard, offset, length = int(rec["shard"]), int(rec["offset"]), int(rec["length"])
        blob = os.pread(self._fd(shard), length, offset)
        if len(blob) != length or fmt.record_crc(blob) != int(rec["crc32"]):
            raise CacheError(
                f"sample {i} in shard {self.shards[shard]['name']} of {self.dir} is corrupt (checksum mismatch)",
                "rebuild the cache (`deepspec data inspect DIR --verify` checks all shards)",
            )
        return blob

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        seq_len = int(self.index[i]["seq_len"])
        ids, mask, aux, final, summary = fmt.unpack_record(
            self.read_record(i), seq_len, summary=self.target_summary is not None)
        aux_t, final_t = self.codec.decode_features(aux, final, seq_len, self.num_layers, self.hidden_size)
        sample = {"input_ids": ids, "loss_mask": mask, "aux_hidden": aux_t, "final_hidden": final_t}
        if summary is not None and self.use_summary:
            sample["target_lse"], sample["target_top"] = summary
        return sample

    # -- integrity -------------------------------------------------------------------------------
    def verify(self, on_shard: Callable[[str, int], None] | None = None) -> None:
        """Check every shard's size and sha256 against the manifest; raise naming the bad ones."""
        bad = []
        for info in self.shards:
            path = self.dir / fmt.SHARDS / info["name"]
            if not path.is_file():
                bad.append(f"{info['name']}: missing")
            elif path.stat().st_size != info["bytes"]:
                bad.append(f"{info['name']}: {path.stat().st_size} bytes, manifest says {info['bytes']}")
            elif sha256_file(path) != info["sha256"]:
                bad.append(f"{info['name']}: sha256 mismatch")
            if on_shard:
                on_shard(info["name"], info["bytes"])
        if bad:
            raise CacheError(
                f"feature cache {self.dir} has {len(bad)} bad shard(s):\n  " + "\n  ".join(bad),
                "rebuild the cache with `deepspec data cache`",
            )

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds, self._pid = {}, None

    def __getstate__(self) -> dict[str, Any]:
        # Descriptors do not survive pickling (spawned workers): each process opens its own.
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = {}, None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

