"""Write a feature cache: tokenise → plan shards → target forward → encode → shards → index + manifest.

Resumable per shard: a shard counts as done once its ``shards/shard-NNNNN.json`` exists (written
atomically after the shard file itself was renamed into place), so a rerun of the same command
skips done shards and redoes a half-written one. Shard boundaries depend only on the tokenised
data (a token budget per shard), never on timing, so a resumed cache equals an uninterrupted one.

Several ranks (``RANK`` / ``WORLD_SIZE`` from ``accelerate launch`` or ``torchrun``): every rank
tokenises everything (cheap next to the target forward) to learn the same shard plan, keeps the
samples of shards ``j % world == rank`` and writes those; rank 0 then waits for all shards and
writes ``index.bin`` and ``manifest.json`` atomically. Shard names are global, so the finished
cache does not depend on the number of ranks, and a resume may use a different number.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepspec_core import __version__
from deepspec_core.cache import format as fmt
from deepspec_core.cache.codecs import Codec, get_codec
from deepspec_core.data.conversations import require_eval_files
from deepspec_core.data.tokenize import LOSS_MASK_VERSION, no_samples_error
from deepspec_core.errors import CacheError, DataError
from deepspec_core.io import atomic_path, atomic_write_json, output_dir, sha256_file
from deepspec_core.progress import Progress, Stage, as_progress
from deepspec_core.spec import check_against_target

Sample = Mapping[str, torch.Tensor]
FeaturesFn = Callable[[list[Sample]], list[dict[str, torch.Tensor]]]


@dataclass
class CacheConfig:
    """Everything that decides a cache's content; ``plan.json`` records it and resume compares it."""

    target: dict[str, Any]  # model, revision, tokenizer_hash, chat_template_hash, ...
    layer_ids: list[int]
    hidden_size: int
    codec: str
    max_length: int
    min_loss_tokens: int
    thinking: bool
    sources: list[dict[str, Any]]  # path, sha256
    shard_tokens: int
    loss_mask_version: int = LOSS_MASK_VERSION  # how input ids and loss masks were made (data.tokenize)
    drop_truncated: bool = False  # conversations with an answer cut by max_tokens left out
    # The head the per-position target summary is computed with ({"dtype", "softcap"}); None: no
    # summary, a version-1 cache (what a resumed version-1 cache keeps writing).
    target_summary: dict[str, Any] | None = None

    def plan_dict(self) -> dict[str, Any]:
        version = fmt.FORMAT_VERSION if self.target_summary is not None else 1
        plan = {"format": fmt.FORMAT_NAME, "format_version": version, **asdict(self)}
        if self.target_summary is None:
            del plan["target_summary"]  # a version-1 plan, as version-1 writers recorded it
        return plan


@dataclass
class ShardSpan:
    samples: int = 0
    tokens: int = 0
    loss_tokens: int = 0


@dataclass
class ShardPlan:
    shards: list[ShardSpan]
    skipped: dict[str, int]
    kept: dict[int, list[Sample]] = field(default_factory=dict)  # shard → samples this rank writes
    truncated: int = 0  # samples cut to max_length (kept, with their first max_length tokens)
    heldout: int = 0  # trailing samples from the held-out files (data.eval): validation, never trained on
    # occurrences of each token id among supervised tokens (index = id): a reduced draft
    # vocabulary is chosen from them without reading the cache again
    loss_token_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)


@dataclass
class _Tally:
    """What the cache stage shows besides its token count: samples forwarded, and the MB/s of
    shards written (what a disk or a codec limits)."""

    stage: Stage
    t0: float = field(default_factory=time.monotonic)
    samples: int = 0
    bytes: int = 0

    def forwarded(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.stage.advance(tokens, samples=self.samples)

    def wrote(self, nbytes: int) -> None:
        self.bytes += nbytes
        self.stage.advance(0, mb_s=self.bytes / 1e6 / max(time.monotonic() - self.t0, 1e-9))


def shard_tokens_for(shard_size_mb: int, codec: Codec, num_layers: int, hidden: int) -> int:
    """Tokens per shard so that a shard is about ``shard_size_mb`` under the codec's estimate."""
    per_token = fmt.TOKEN_BYTES + fmt.SUMMARY_BYTES + hidden * (num_layers * codec.aux_bytes_per_value + codec.final_bytes_per_value)
    return max(1, int(shard_size_mb * 1e6 / per_token))


def source_entries(files: Sequence[Path | str]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        p = Path(f).expanduser()
        if not p.is_file():
            raise DataError(f"training file {f} does not exist", "check data.train or --in")
        out.append({"path": str(f), "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return out


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# -- planning ------------------------------------------------------------------------------------


def plan_shards(
    samples: Iterable[tuple[str, Sample]],
    shard_tokens: int,
    min_loss_tokens: int,
    keep: Callable[[int], bool] = lambda j: False,
    skipped: Counter | None = None,
) -> ShardPlan:
    """Cut the sample stream into shards of ~``shard_tokens`` tokens; keep those ``keep(j)`` wants.

    ``skipped`` is the tokeniser's live counter of skipped samples; samples that still have fewer
    than ``min_loss_tokens`` supervised tokens are skipped and counted here.
    """
    skipped = skipped if skipped is not None else Counter()
    shards: list[ShardSpan] = []
    kept: dict[int, list[Sample]] = {}
    cur = ShardSpan()
    truncated = heldout = 0
    counts = np.zeros(0, np.int64)
    for _, s in samples:
        n_loss = int(torch.as_tensor(s["loss_mask"]).sum())
        if n_loss < min_loss_tokens:
            skipped["too few loss tokens"] += 1
            continue
        truncated += bool(s.get("truncated", False))
        if s.get("heldout", False):
            heldout += 1  # validation only: its tokens do not choose the draft vocabulary
        else:
            supervised = torch.as_tensor(s["input_ids"])[torch.as_tensor(s["loss_mask"]).bool()].numpy()
            here = np.bincount(supervised, minlength=counts.size)
            counts = here + np.pad(counts, (0, here.size - counts.size))
        j = len(shards)
        if keep(j):
            # int32 ids: half the memory of int64 while the sample waits for its shard.
            kept.setdefault(j, []).append({"input_ids": torch.as_tensor(s["input_ids"]).to(torch.int32),
                                           "loss_mask": torch.as_tensor(s["loss_mask"]).bool()})
        cur.samples += 1
        cur.tokens += int(s["input_ids"].shape[0])
        cur.loss_tokens += n_loss
        if cur.tokens >= shard_tokens:
            shards.append(cur)
            cur = ShardSpan()
    if cur.samples:
        shards.append(cur)
    return ShardPlan(shards, dict(sorted(skipped.items())), kept, truncated, heldout, counts)


# -- shards --------------------------------------------------------------------------------------


def _read_meta(out_dir: Path, j: int) -> dict[str, Any] | None:
    """Shard ``j``'s metadata if the shard is complete on disk, else None."""
    meta_path = out_dir / fmt.SHARDS / fmt.shard_meta_name(j)
    shard_path = out_dir / fmt.SHARDS / fmt.shard_name(j)
    if not meta_path.is_file() or not shard_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if meta.get("bytes") == shard_path.stat().st_size else None


def _shard_done(out_dir: Path, j: int, span: ShardSpan) -> bool:
    meta = _read_meta(out_dir, j)
    return meta is not None and (meta["samples"], meta["tokens"]) == (span.samples, span.tokens)


def _encode(codec: Codec, sample: dict[str, torch.Tensor]) -> bytes:
    aux, final = codec.encode_features(sample["aux_hidden"], sample["final_hidden"])
    summary = (sample["target_lse"], sample["target_top"]) if "target_lse" in sample else None
    return fmt.pack_record(sample["input_ids"], sample["loss_mask"], aux, final, summary)


def write_shard(
    out_dir: Path,
    j: int,
    samples: list[Sample],
    codec: Codec,
    features_fn: FeaturesFn,
    batch_size: int,
    pool: ThreadPoolExecutor,
    tally: _Tally,
    with_summary: bool = False,
) -> dict[str, Any]:
    """Forward, encode and write shard ``j`` (records in sample order); return its metadata.
    ``with_summary``: the plan's records carry the target summary (format 2)."""
    shard_dir = out_dir / fmt.SHARDS
    for stale in shard_dir.glob(f".{fmt.shard_name(j)}.*.tmp"):
        stale.unlink()  # left by a killed run; atomic_path cleans up only on exceptions
    # Longest first: similar lengths batch with little padding, and memory peaks at the start.
    order = sorted(range(len(samples)), key=lambda i: -int(samples[i]["input_ids"].shape[0]))
    futures: list[Any] = [None] * len(samples)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        feats = features_fn([samples[i] for i in idx])
        if any(("target_lse" in f) != with_summary for f in feats):  # the reader trusts the manifest
            raise ValueError(f"features_fn must {'' if with_summary else 'not '}return target_lse / target_top "
                             "for this cache's plan")
        for i, feat in zip(idx, feats, strict=True):
            futures[i] = pool.submit(_encode, codec, feat)
        tally.forwarded(len(idx), sum(int(samples[i]["input_ids"].shape[0]) for i in idx))
    records, offset, h = [], 0, hashlib.sha256()
    shard_path = shard_dir / fmt.shard_name(j)
    with atomic_path(shard_path) as tmp:
        with open(tmp, "wb") as f:
            for s, fut in zip(samples, futures, strict=True):
                blob = fut.result()
                f.write(blob)
                h.update(blob)
                records.append([offset, len(blob), int(s["input_ids"].shape[0]), fmt.record_crc(blob)])
                offset += len(blob)
            f.flush()
            os.fsync(f.fileno())
    meta = {
        "name": fmt.shard_name(j),
        "samples": len(samples),
        "tokens": sum(r[2] for r in records),
        "loss_tokens": sum(int(s["loss_mask"].sum()) for s in samples),
        "bytes": offset,
        "sha256": h.hexdigest(),
        "records": records,
    }
    atomic_write_json(shard_dir / fmt.shard_meta_name(j), meta)
    tally.wrote(offset)
    return meta


# -- the whole cache -----------------------------------------------------------------------------


def _check_plan(out_dir: Path, plan: dict[str, Any], write: bool = True) -> None:
    """Refuse a directory holding a cache of another plan; record the plan (when ``write``)."""
    path = out_dir / fmt.PLAN
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        if diff:
            raise CacheError(
                f"{out_dir} holds a cache built with different {', '.join(diff)}",
                "rerun with the same spec, data and codec to resume, or choose another --out (or delete it)",
            )
    elif write:
        atomic_write_json(path, plan)


def write_cache(
    out_dir: Path | str,
    config: CacheConfig,
    samples: Iterable[tuple[str, Sample]],
    features_fn: FeaturesFn,
    batch_size: int = 8,
    skipped: Counter | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: Progress | None = None,
    encode_workers: int | None = None,
    finalize: bool = True,
) -> dict[str, Any] | None:
    """Write (or resume) this rank's shards; on rank 0 then merge into index + manifest.

    Returns the manifest on rank 0 (None elsewhere, or when ``finalize`` is False). ``progress``
    gets the forward + encode stage, over tokens (:mod:`deepspec_core.progress`).
    """
    out_dir = Path(out_dir)
    progress = as_progress(progress)
    codec = get_codec(config.codec)
    plan_dict = config.plan_dict()
    if (out_dir / fmt.MANIFEST).is_file():
        _check_plan(out_dir, plan_dict)
        return fmt.read_manifest(out_dir) if rank == 0 else None
    _check_plan(out_dir, plan_dict, write=False)

    progress.log("tokenising…")
    def keep(j: int) -> bool:  # only samples still to write are held in memory
        return j % world_size == rank and _read_meta(out_dir, j) is None

    plan = plan_shards(samples, config.shard_tokens, config.min_loss_tokens, keep, skipped)
    if plan.samples == plan.heldout:  # no training sample; before anything is written, so the fixed command starts afresh
        raise no_samples_error(", ".join(src["path"] for src in config.sources) or str(out_dir), plan.skipped)
    (out_dir / fmt.SHARDS).mkdir(parents=True, exist_ok=True)
    _check_plan(out_dir, plan_dict)
    spans = plan.shards
    for j in range(rank, len(spans), world_size):
        if j not in plan.kept and not _shard_done(out_dir, j, spans[j]):
            raise CacheError(
                f"{fmt.shard_name(j)} in {out_dir} does not hold the samples the plan puts there",
                "the input changed since it was written: delete the directory and rebuild",
            )
    todo = sorted(plan.kept)
    workers = encode_workers or max(1, min(4, (os.cpu_count() or 2) - 1))
    with (
        progress.stage("cache", total=sum(spans[j].tokens for j in todo), unit="tok") as stage,
        ThreadPoolExecutor(workers) as pool,
    ):
        tally = _Tally(stage)
        for j in todo:
            write_shard(out_dir, j, plan.kept.pop(j), codec, features_fn, batch_size, pool, tally,
                        with_summary=config.target_summary is not None)
    plan.kept.clear()
    if rank != 0 or not finalize:
        _barrier(world_size)
        return None
    _barrier(world_size)
    return finalize_cache(out_dir, config, plan)


def sparse_counts(counts: np.ndarray) -> dict[str, list[int]]:
    """A dense count vector → {"ids": [...], "counts": [...]} of its non-zero entries (for JSON)."""
    ids = np.flatnonzero(counts)
    return {"ids": ids.tolist(), "counts": counts[ids].tolist()}


def _barrier(world_size: int) -> None:
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _wait_for_shards(out_dir: Path, spans: list[ShardSpan], timeout_s: float | None) -> None:
    start = time.monotonic()
    while True:
        missing = [j for j, span in enumerate(spans) if not _shard_done(out_dir, j, span)]
        if not missing:
            return
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            names = ", ".join(fmt.shard_name(j) for j in missing[:5])
            raise CacheError(
                f"{len(missing)} shards of {out_dir} were not written by the other ranks (e.g. {names})",
                "rerun the same command (on any number of ranks) to finish them",
            )
        time.sleep(1.0)


def finalize_cache(
    out_dir: Path, config: CacheConfig, plan: ShardPlan, timeout_s: float | None = None
) -> dict[str, Any]:
    """Merge every shard's records into ``index.bin`` and write ``manifest.json`` (last, atomically)."""
    _wait_for_shards(out_dir, plan.shards, timeout_s)
    metas = [json.loads((out_dir / fmt.SHARDS / fmt.shard_meta_name(j)).read_text()) for j in range(len(plan.shards))]
    rows = [(j, *r) for j, m in enumerate(metas) for r in m["records"]]
    index = np.array([tuple(r[:5]) for r in rows], dtype=fmt.INDEX_DTYPE) if rows else np.zeros(0, fmt.INDEX_DTYPE)
    with atomic_path(out_dir / fmt.INDEX) as tmp:
        tmp.write_bytes(fmt.index_bytes(index, config.plan_dict()["format_version"]))
    tokens = sum(m["tokens"] for m in metas)
    if (len(index), tokens) != (plan.samples, plan.tokens):
        raise CacheError(f"shards of {out_dir} disagree with the plan", "delete the directory and rebuild")
    manifest = {
        **config.plan_dict(),
        "deepspec_version": __version__,
        "feature_dtype": "bfloat16",
        "counts": {
            "samples": len(index),
            "tokens": tokens,
            "loss_tokens": sum(m["loss_tokens"] for m in metas),
            "truncated": plan.truncated,
            "heldout_samples": plan.heldout,
            "skipped": plan.skipped,
            "loss_token_counts": sparse_counts(plan.loss_token_counts),
        },
        "shards": [{k: m[k] for k in ("name", "samples", "tokens", "bytes", "sha256")} for m in metas],
    }
    manifest["sizes"] = fmt.describe(manifest)
    atomic_write_json(out_dir / fmt.MANIFEST, manifest)
    return manifest


# -- from a run spec -----------------------------------------------------------------------------


def check_cache_dir(path: Path | str) -> Path:
    """Where a cache is to be written: a new or empty directory, or one holding a cache (finished or
    not, which is then resumed or checked). A file, or a directory of other files, is refused with
    CacheError before the target loads; nothing there is touched."""
    out = output_dir(path, "cache directory", CacheError)
    ours = (fmt.PLAN, fmt.MANIFEST, fmt.SHARDS, fmt.INDEX)
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in ours):
        raise CacheError(
            f"cache directory {out} holds other files and no feature cache",
            "choose a new or empty directory (--out or cache.path), or the directory of an earlier cache to resume it",
        )
    return out


def build_cache(
    spec: Any,
    out_dir: Path | str | None = None,
    files: Sequence[str] | None = None,
    codec: str | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    target_summary: bool = True,
) -> dict[str, Any] | None:
    """``deepspec data cache``: the whole pipeline for ``spec`` on this rank. ``target_summary=False``
    writes format 1 (no per-position logsumexp / argmax), what an earlier deepspec wrote."""
    from deepspec_core.cache.online import compute_features, iter_token_samples
    from deepspec_core.data.tokenize import TokenizeStats
    from deepspec_core.targets import hf

    progress = as_progress(progress)
    files = list(files or spec.data.train)
    if not files:
        raise DataError("no training files", "set data.train in the spec or pass --in FILE")
    heldout = [] if set(map(str, files)) != set(map(str, spec.data.train)) else list(spec.data.eval)
    require_eval_files(heldout)
    files += heldout  # the validation files, cached after the training ones
    codec_obj = get_codec(codec or spec.cache.codec)  # fail on a bad name before loading anything
    out_dir = check_cache_dir(out_dir or spec.cache_dir())
    sources = source_entries(files)
    rank, world = rank_and_world()
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    check_against_target(spec, hf.load_config(spec.target))  # before anything is loaded or written
    progress.log("loading target…")
    target = hf.load_target_from_spec(spec.target, device=device)
    hidden = int(hf.text_config(target.config).hidden_size)
    head: torch.Tensor = target.model.get_output_embeddings().weight  # type: ignore[operator]
    softcap = getattr(hf.text_config(target.config), "final_logit_softcapping", None)
    summary = {"dtype": str(head.dtype).removeprefix("torch."), "softcap": softcap} if target_summary else None
    if summary is not None and _started_as_version_1(out_dir):
        summary = None
        progress.log(f"{out_dir} was started by an earlier deepspec (cache format 1): resuming it without the target summary")
    config = CacheConfig(
        target={
            "model": spec.target.model,
            "revision": spec.target.revision,
            "tokenizer_hash": hf.tokenizer_hash(target.tokenizer),
            "chat_template_hash": hf.chat_template_hash(target.tokenizer),
            "num_hidden_layers": hf.num_hidden_layers(target.config),
            "weights_fingerprint": hf.weights_fingerprint(spec.target.model),
        },
        layer_ids=list(spec.target.layer_ids),
        hidden_size=hidden,
        codec=codec_obj.name,
        max_length=spec.data.max_length,
        min_loss_tokens=spec.data.min_loss_tokens,
        thinking=spec.target.thinking,
        drop_truncated=spec.data.drop_truncated,
        sources=sources,
        shard_tokens=shard_tokens_for(spec.cache.shard_size_mb, codec_obj, len(spec.target.layer_ids), hidden),
        target_summary=summary,
    )
    stats = TokenizeStats()
    samples = iter_token_samples(
        files, target.tokenizer, spec.data.max_length, spec.target.thinking, spec.data.min_loss_tokens, stats,
        spec.data.drop_truncated, heldout=heldout,
    )
    pad = target.tokenizer.pad_token_id or 0

    def features_fn(batch: list[Sample]) -> list[dict[str, torch.Tensor]]:
        feats = compute_features(target.model, batch, config.layer_ids, pad_id=pad)
        if summary is not None:
            add_target_summary(feats, codec_obj, head, softcap)
        return feats

    return write_cache(
        out_dir, config, samples, features_fn,
        batch_size=batch_size or spec.cache.batch_size, skipped=stats.skipped,
        rank=rank, world_size=world, progress=progress,
    )


def _started_as_version_1(out_dir: Path) -> bool:
    """A partial or complete cache whose plan a version-1 writer recorded."""
    path = out_dir / fmt.PLAN
    try:
        return path.is_file() and json.loads(path.read_text()).get("format_version") == 1
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def add_target_summary(
    feats: list[dict[str, torch.Tensor]], codec: Codec, head: torch.Tensor, softcap: float | None
) -> None:
    """Add ``target_lse`` (T,) fp32 and ``target_top`` (T,) int64 to each sample dict: the target's
    full-vocabulary logsumexp and argmax (:func:`deepspec_core.losses.target_summary`) at the final
    hidden state *as the cache will decode it* (a lossy final codec is applied first), so training
    gets the same numbers it would compute from the stored features. One batched product on the
    head's device."""
    from deepspec_core.losses import target_summary

    finals = []
    for f in feats:
        final = f["final_hidden"]
        if not codec.final.lossless:
            final = codec.final.decode(codec.final.encode(final), *final.shape)
        finals.append(final)
    lse, top = target_summary(torch.cat(finals).to(head.device), head, softcap)
    for f, part_lse, part_top in zip(feats, lse.cpu().split([len(x) for x in finals]),
                                     top.cpu().split([len(x) for x in finals]), strict=True):
        f["target_lse"], f["target_top"] = part_lse, part_top
