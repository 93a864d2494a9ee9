"""Features from a live target: the path the cache writer and online training share.

:func:`compute_features` is the only place samples become features; the writer encodes its
output and online mode (``cache.online = true``) hands it to training directly. Both go through
``targets.hf.capture_features``, so a ``bf16`` cache and online features are equal by
construction (given the same batch composition; padding can move fp32 results in the last bits).

Sample dicts (docs/cache.md): ``input_ids`` (T,) int64, ``loss_mask`` (T,) bool, ``aux_hidden``
(T, K, H) bf16, ``final_hidden`` (T, H) bf16. Features are bf16 whatever the target runs in, so
that a run gets the same tensors from the cache and online.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from deepspec_core.cache.codecs import FEATURE_DTYPE
from deepspec_core.targets.hf import capture_features


@torch.no_grad()
def compute_features(
    model: torch.nn.Module,
    samples: Sequence[Mapping[str, torch.Tensor]],
    layer_ids: Sequence[int],
    pad_id: int = 0,
    out_device: torch.device | str = "cpu",
) -> list[dict[str, torch.Tensor]]:
    """One batched target forward over ``samples`` (right padding) → full sample dicts."""
    device = next(model.parameters()).device
    lengths = [int(s["input_ids"].shape[0]) for s in samples]
    b, t = len(samples), max(lengths)
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    attn = torch.zeros((b, t), dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, : lengths[i]] = torch.as_tensor(s["input_ids"], dtype=torch.long)
        attn[i, : lengths[i]] = 1
    feats = capture_features(model, ids.to(device), attention_mask=attn.to(device), layer_ids=list(layer_ids))
    aux = feats.aux_hidden.to(FEATURE_DTYPE)  # (B, T, K, H)
    final = feats.final_hidden.to(FEATURE_DTYPE)  # (B, T, H)
    out = []
    for i, s in enumerate(samples):
        n = lengths[i]
        out.append({
            "input_ids": torch.as_tensor(s["input_ids"], dtype=torch.long).to(out_device),
            "loss_mask": torch.as_tensor(s["loss_mask"]).bool().to(out_device),
            "aux_hidden": aux[i, :n].to(out_device),
            "final_hidden": final[i, :n].to(out_device),
        })
    return out


def iter_token_samples(
    files: Sequence[Path | str],
    tokenizer: Any,
    max_length: int,
    thinking: bool,
    min_loss_tokens: int,
    stats: Any = None,
    drop_truncated: bool = False,
    heldout: Sequence[Path | str] = (),
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(conversation id, {input_ids, loss_mask} tensors and truncated / heldout bools) over
    conversation files, in file order.

    Skips (no assistant turn, too few loss tokens, ...) are counted in ``stats``
    (a :class:`deepspec_core.data.tokenize.TokenizeStats`). Samples of the ``heldout`` files (the
    validation set, listed last in ``files``) carry ``heldout = True``.
    """
    from deepspec_core.data.tokenize import iter_tokenized

    heldout_names = {str(f) for f in heldout}
    for path in files:
        for conv_id, s in iter_tokenized(path, tokenizer, max_length, thinking, min_loss_tokens, stats=stats,
                                         drop_truncated=drop_truncated):
            yield conv_id, {
                "input_ids": torch.tensor(s.input_ids, dtype=torch.long),
                "loss_mask": torch.tensor(s.loss_mask, dtype=torch.bool),
                # counted by the cache plan; not tensors, never batched
                "truncated": s.truncated,
                "heldout": str(path) in heldout_names,
            }


class OnlineFeatures(Dataset):
    """A map-style dataset that runs the target for each item instead of reading a cache.

    ``__getitem__`` runs one sequence; ``get_batch(indices)`` runs them in one batched forward,
    which is what a training loop should call. Keep it in the main process (num_workers=0): the
    target lives on the training device.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        samples: Sequence[Mapping[str, torch.Tensor]],
        layer_ids: Sequence[int],
        pad_id: int = 0,
        out_device: torch.device | str = "cpu",
    ):
        self.model = model
        self.samples = samples
        self.layer_ids = list(layer_ids)
        self.pad_id = pad_id
        self.out_device = out_device
        self.num_heldout = 0  # trailing samples from held-out files (data.eval): never trained on

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [int(s["input_ids"].shape[0]) for s in self.samples]

    def get_batch(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        batch = [self.samples[i] for i in indices]
        return compute_features(self.model, batch, self.layer_ids, self.pad_id, self.out_device)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.get_batch([i])[0]


def online_dataset(spec: Any, target: Any, files: Sequence[str] | None = None, stats: Any = None) -> OnlineFeatures:
    """The samples of ``spec`` as live target features: ``data.train`` (unless ``files``), then the
    held-out ``data.eval`` ones (``OnlineFeatures.num_heldout`` of them, last).

    Raises DataError naming the files and the skip reasons when no training sample is usable."""
    from deepspec_core.data.conversations import require_eval_files
    from deepspec_core.data.tokenize import TokenizeStats, require_samples

    require_eval_files(spec.data.eval)
    stats = stats if stats is not None else TokenizeStats()
    train_files = list(files if files is not None else spec.data.train)
    samples = [
        s
        for _, s in iter_token_samples(
            [*train_files, *spec.data.eval], target.tokenizer, spec.data.max_length, spec.target.thinking,
            spec.data.min_loss_tokens, stats, spec.data.drop_truncated, heldout=spec.data.eval,
        )
    ]
    require_samples(stats, train_files)
    pad = target.tokenizer.pad_token_id or 0
    ds = OnlineFeatures(target.model, samples, spec.target.layer_ids, pad_id=pad, out_device=target.device)
    ds.num_heldout = sum(bool(s["heldout"]) for s in samples)
    return ds
