"""Training data: which samples each process reads at each optimizer step, and the loaders.

Data order is a pure function of (seed, epoch): epoch ``e`` is one permutation of the training
samples, cut into global batches (the incomplete tail is dropped). Global batch ``s`` is split
into ``accum`` micro-steps × ``world`` processes × ``micro`` samples, in that order, so the same
global batch is seen whatever the process count — and the data position is just the number of
optimizer steps taken. Resuming skips to that step without reading what was already consumed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deepspec_core.errors import SpecError
from deepspec_core.spec import RunSpec

if TYPE_CHECKING:
    from deepspec_core.cache.online import OnlineFeatures
    from deepspec_core.cache.reader import FeatureCache


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch ``epoch``: the same on every process, machine and run."""
    rng = np.random.default_rng([seed % (1 << 63), epoch])
    return rng.permutation(num_samples)


@dataclass(frozen=True)
class DataPlan:
    """Which sample indices each process reads for each micro-step of each optimizer step."""

    num_samples: int
    global_batch: int
    micro_batch: int
    world_size: int
    seed: int

    @property
    def accum(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.num_samples // self.global_batch)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within the epoch) after ``step`` optimizer steps."""
        return divmod(step, self.steps_per_epoch)

    def micro_batches(self, step: int, rank: int, perm: np.ndarray | None = None) -> list[list[int]]:
        """Index lists of the ``accum`` micro-batches that ``rank`` reads in optimizer step ``step`` (0-based)."""
        epoch, s = self.position(step)
        if perm is None:
            perm = epoch_permutation(self.num_samples, self.seed, epoch)
        if self.num_samples < self.global_batch:
            # Fewer samples than one batch: cycle through the permutation (tiny runs, tests).
            perm = np.resize(perm, self.global_batch)
        batch = perm[s * self.global_batch : (s + 1) * self.global_batch]
        per_micro = self.micro_batch * self.world_size
        out = []
        for a in range(self.accum):
            lo = a * per_micro + rank * self.micro_batch
            out.append([int(i) for i in batch[lo : lo + self.micro_batch]])
        return out


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's micro-batches for optimizer steps ``start`` … ``end - 1`` (across epochs)."""

    def __init__(self, plan: DataPlan, rank: int, start: int, end: int):
        self.plan, self.rank, self.start, self.end = plan, rank, start, end

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.plan.accum

    def __iter__(self) -> Iterator[list[int]]:
        epoch, perm = -1, None
        for step in range(self.start, self.end):
            e, _ = self.plan.position(step)
            if e != epoch:
                epoch, perm = e, epoch_permutation(self.plan.num_samples, self.plan.seed, e)
            yield from self.plan.micro_batches(step, self.rank, perm)


def _ignore_stop_signals(_worker_id: int) -> None:
    """A terminal's Ctrl-C, and a scheduler's SIGTERM / SIGUSR1, reach the whole process group. The
    main process answers them by finishing the step and checkpointing (``launch.StopRequest``), which
    needs the batches its workers are still decoding; a worker killed by the signal would turn that
    clean stop into a crash. The workers ignore those signals and exit when the loader closes, or
    when the main process is gone (torch's worker watchdog)."""
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


def make_loader(dataset: Dataset, batch_sampler: Sampler, collate, num_workers: int, seed: int) -> DataLoader:
    """A DataLoader that never touches the global RNG (its own generator), so resume stays exact, and
    whose workers survive the signals that stop training cleanly (``_ignore_stop_signals``)."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_ignore_stop_signals if num_workers > 0 else None,
    )


def val_batches(indices: list[int], micro_batch: int, rank: int, world_size: int) -> list[list[int]]:
    """This process's share of the validation set, in micro-batches (round-robin over processes)."""
    mine = indices[rank::world_size]
    return [mine[i : i + micro_batch] for i in range(0, len(mine), micro_batch)]


# -- assembly: datasets, frozen target pieces, the draft ---------------------------------------


@dataclass
class TrainParts:
    """The draft and its data. Samples ``[0, num_train)`` train; validation reads ``num_val`` samples
    from ``num_train`` on. Those come from ``data.eval`` when the spec has it (cached or tokenised
    after the training files, ``num_heldout`` of them), else they are the tail of the training data;
    either way they are never trained on and are the same offline and online.
    """

    draft: Any  # DraftModel, fp32 trainable parameters, on the training device
    dataset: Any  # map-style: a FeatureCache, or OnlineFeatures (runs the target, has get_batch)
    num_train: int
    num_val: int
    online: bool
    target_path: str
    num_heldout: int = 0  # samples from data.eval after the training ones (0: validation is the training tail)

    def _batch(self, indices: list[int]) -> Any:
        from deepspec_core.drafts.base import collate_samples

        if self.online:
            return online_batch(self.dataset, indices)
        return collate_samples([self.dataset[i] for i in indices])

    def train_batches(
        self, plan: DataPlan, rank: int, start: int, end: int, num_workers: int
    ) -> Iterator[Any]:
        """This process's micro-batches (CPU or, online, target-device DraftBatch) for steps start … end−1."""
        sampler = StepBatchSampler(plan, rank, start, end)
        if self.online:
            # The target lives on the training device: no worker processes.
            return (self._batch(idx) for idx in sampler)
        from deepspec_core.drafts.base import collate_samples

        return iter(make_loader(self.dataset, sampler, collate_samples, num_workers, plan.seed))

    def val_batch(self, indices: list[int]) -> Any:
        """A batch of held-out samples; ``indices`` count from the start of the held-out slice."""
        return self._batch([self.num_train + i for i in indices])

    def loss_token_counts(self) -> torch.Tensor:
        """(V,) counts of supervised tokens over the training samples (for a reduced draft vocabulary).

        A cache counted them when it was written (``counts.loss_token_counts`` of its manifest): only
        the few held-out samples are read, to take them out. Online, one pass over the tokens (no
        target forward) before step 0."""
        v = self.draft.vocab_size
        stored = None if self.online else self.dataset.manifest["counts"].get("loss_token_counts")
        if stored is None:  # online, or a cache written before the counts were recorded
            counts = torch.zeros(v, dtype=torch.long)
            for i in range(self.num_train):
                counts += self._bincount(i, v)
            return counts
        counts = torch.zeros(v, dtype=torch.long)
        counts[torch.tensor(stored["ids"], dtype=torch.long)] = torch.tensor(stored["counts"], dtype=torch.long)
        if not self.num_heldout:  # the validation tail belongs to the training files: take it out
            for i in range(self.num_train, self.num_train + self.num_val):
                counts -= self._bincount(i, v)
        return counts

    def _bincount(self, i: int, v: int) -> torch.Tensor:
        ids, mask = self._tokens(i)
        return torch.bincount(ids[mask].long(), minlength=v)[:v]

    def _tokens(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, loss_mask) of sample i without decoding (or computing) its features."""
        if self.online:
            s = self.dataset.samples[i]
            return torch.as_tensor(s["input_ids"]), torch.as_tensor(s["loss_mask"]).bool()
        from deepspec_core.cache.format import unpack_record

        ids, mask, *_ = unpack_record(self.dataset.read_record(i), int(self.dataset.index[i]["seq_len"]),
                                      summary=self.dataset.target_summary is not None)
        return ids, mask


@torch.no_grad()
def online_batch(online: Any, indices: list[int]) -> Any:
    """One batched target forward → a DraftBatch that stays on the target's device.

    The same capture function and feature dtype as the cache writer (``cache.online``), but the
    padded batch is kept whole instead of being split into samples and re-padded on the CPU.
    """
    from deepspec_core.cache.codecs import FEATURE_DTYPE
    from deepspec_core.drafts.base import DraftBatch
    from deepspec_core.targets.hf import capture_features

    samples = [online.samples[i] for i in indices]
    lengths = [int(s["input_ids"].shape[0]) for s in samples]
    b, t = len(samples), max(lengths)
    ids = torch.full((b, t), online.pad_id, dtype=torch.long)
    attn = torch.zeros((b, t), dtype=torch.long)
    loss = torch.zeros((b, t), dtype=torch.bool)
    for i, (s, n) in enumerate(zip(samples, lengths, strict=True)):
        ids[i, :n], attn[i, :n], loss[i, :n] = s["input_ids"], 1, torch.as_tensor(s["loss_mask"]).bool()
    device = next(online.model.parameters()).device
    ids, attn = ids.to(device), attn.to(device)
    feats = capture_features(online.model, ids, attention_mask=attn, layer_ids=online.layer_ids)
    keep = attn.to(FEATURE_DTYPE)  # padding carries zeros, as in a collated cache batch
    return DraftBatch(
        input_ids=ids,
        attention_mask=attn,
        loss_mask=loss.to(device),
        aux_hidden=feats.aux_hidden.to(FEATURE_DTYPE) * keep[:, :, None, None],  # (B, T, K, H)
        final_hidden=feats.final_hidden.to(FEATURE_DTYPE) * keep[:, :, None],  # (B, T, H)
    )


def holdout_sizes(num_samples: int, val_samples: int) -> tuple[int, int]:
    """(train, validation) sample counts: the last ``val_samples`` are held out."""
    if num_samples <= val_samples:
        raise SpecError(
            f"train.val_samples ({val_samples}) leaves no training samples (the data has {num_samples})",
            "lower train.val_samples or add data",
        )
    return num_samples - val_samples, val_samples


def build_parts(spec: RunSpec, device: torch.device, say: Callable[[str], None]) -> TrainParts:
    """The draft on ``device`` (via :func:`deepspec_core.assembly.assemble`) and its datasets: the
    offline cache, or online features from the target."""
    from deepspec_core.assembly import assemble
    from deepspec_core.spec import check_registered

    check_registered(spec)
    parts = assemble(spec, device, load_target=spec.cache.online)
    if spec.cache.online:
        from deepspec_core.cache.online import online_dataset
        from deepspec_core.data.tokenize import TokenizeStats

        stats = TokenizeStats()
        online = online_dataset(spec, parts.target, stats=stats)
        say(stats.summary(spec.data.max_length))
        dataset: OnlineFeatures | FeatureCache = online
        heldout = online.num_heldout
    else:
        from deepspec_core.cache.reader import FeatureCache
        from deepspec_core.targets.hf import load_tokenizer, text_config, tokenizer_hash

        tok = load_tokenizer(
            parts.target_path, spec.target.revision, spec.target.chat_template, spec.target.trust_remote_code
        )
        # The cache must come from this target, layers, tokenizer and max length; it says which differ.
        cache = FeatureCache(
            spec.cache_dir(),
            spec,
            hidden_size=int(text_config(parts.config).hidden_size),
            tokenizer_hash=tokenizer_hash(tok),
        )
        dataset = cache
        heldout = int(cache.manifest["counts"].get("heldout_samples", 0))
    if heldout:
        num_train, num_val = len(dataset) - heldout, min(spec.train.val_samples, heldout)
    else:
        num_train, num_val = holdout_sizes(len(dataset), spec.train.val_samples)
    source = "online from the target" if spec.cache.online else f"cache {spec.cache_dir()}"
    where = f"from data.eval ({heldout} there)" if heldout else "held out from the training data"
    say(f"features: {source}; {num_train} training samples, {num_val} validation samples {where}")
    draft = parts.draft
    if not spec.cache.online:
        use_target_summary(dataset, draft, say)
    draft.fused_losses = use_fused_losses(spec.train.fused_losses, device)
    draft.loss_memory_budget = spec.train.loss_memory_mb << 20
    draft.use_attention(attention_backend(spec.train.attention, device))
    if spec.train.compile:
        draft.compile_layers()
        say("compile: the draft's decoder layers run through torch.compile (train.compile)")
    if draft.fused_losses:
        say("losses: fused Triton kernels (train.fused_losses)")
    # fp32 master weights for what trains; the frozen target tensors keep the target's dtype.
    for p in draft.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return TrainParts(draft, dataset, num_train, num_val, spec.cache.online, parts.target_path, heldout)


def use_target_summary(cache: Any, draft: Any, say: Callable[[str], None]) -> None:
    """Read the cache's target summary (logsumexp and argmax per position) only where it is what
    this draft's head would compute: the same head dtype and softcap. It matters only with a
    reduced draft vocabulary, where it saves the full-vocabulary target product of every step."""
    stored = cache.target_summary
    if draft.draft_ids is None:
        cache.use_summary = False  # a full-vocabulary loss needs the target's full logits anyway
        return
    head = {"dtype": str(draft.target_head.weight.dtype).removeprefix("torch."), "softcap": draft.softcap}
    if stored is None:
        say(f"note: the feature cache {cache.dir} has no target summary (format 1), so every step computes "
            "the target's full-vocabulary logits; to skip them, build a new cache into an empty directory "
            "(`deepspec data cache SPEC --out DIR`) and set cache.path to it")
    elif stored != head:
        cache.use_summary = False
        say(f"note: the cache's target summary was computed with a {stored} head, this run's is {head}: "
            "computing the target's full-vocabulary logits every step instead")
    else:
        cache.use_summary = True


def attention_backend(setting: str, device: torch.device) -> str:
    """Resolve ``train.attention``: 'auto' is flex attention on CUDA, dense SDPA elsewhere (flex
    runs eagerly off CUDA: right, but slow)."""
    if setting == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    return setting


def use_fused_losses(setting: str, device: torch.device) -> bool:
    """Resolve ``train.fused_losses``: 'auto' is on for CUDA with triton installed. Raises SpecError
    for 'on' without triton, or on a CPU outside Triton's interpreter (TRITON_INTERPRET=1)."""
    import importlib.util
    import os

    has_triton = importlib.util.find_spec("triton") is not None
    if setting == "off" or (setting == "auto" and not (device.type == "cuda" and has_triton)):
        return False
    if not has_triton:
        raise SpecError("train.fused_losses = 'on' needs triton", "pip install 'deepspec[kernels]', or set it to 'auto'")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SpecError(
            f"train.fused_losses = 'on' runs Triton kernels on CUDA, not on {device.type}",
            "set it to 'auto' (eager losses off CUDA); TRITON_INTERPRET=1 runs them slowly on a CPU for testing",
        )
    return True


def init_vocab_mapping(parts: TrainParts, spec: RunSpec) -> float | None:
    """A reduced draft vocabulary: the most frequent supervised tokens of the training samples,
    installed in the draft (its head re-initialised from those target rows). Returns the share of
    supervised training tokens the vocabulary covers; None with the full vocabulary."""
    draft = parts.draft
    if draft.draft_head is None:
        return None
    from deepspec_core.drafts.base import build_vocab_mapping

    assert spec.draft.draft_vocab_size is not None  # a draft head exists only for a reduced vocabulary
    counts = parts.loss_token_counts()
    d2t, t2d = build_vocab_mapping(counts, spec.draft.draft_vocab_size)
    device = next(draft.parameters()).device
    draft.set_vocab_mapping(d2t.to(device), t2d.to(device))
    return float(counts[t2d].sum() / counts.sum().clamp_min(1))
