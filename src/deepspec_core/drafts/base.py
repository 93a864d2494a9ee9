"""The draft protocol shared by every algorithm: batch, loss and proposal types, the DraftModel
base class (frozen target embedding / lm_head, trainable state), metrics, and the registry.

Alignment of a sample (the contract with the cache): features at t are the target's hidden
states after reading token t; the target distribution at t, softmax(lm_head(final_hidden[t])),
predicts token t+1, and predicting token t+1 is supervised iff ``loss_mask[t+1]``.

Decoding protocol (chain speculative decoding, one sequence per row, every row advancing by the
same number of tokens — in practice B = 1):

    draft.start(prompt_ids, prompt_aux)            # features for every prompt token
    last = first token sampled from the target
    loop:
        prop = draft.propose(last, k, temperature, generator)
        target reads [last, prop.tokens] → aux for those k+1 tokens; j drafts accepted,
        then one corrected/bonus token y
        draft.commit(tokens=[last, d_1..d_j], aux_hidden=their aux (j+1 rows))
        last = y

State invariant: the draft has *ingested* a prefix x_0..x_{n−1} together with the target
features of every one of those tokens; ``last`` = x_n is committed but not yet read by the
target. ``propose`` never changes that state (any scratch cache entries are dropped before it
returns); ``commit`` extends it with exactly the tokens the target has read and kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import torch
from torch import nn

from deepspec_core import losses
from deepspec_core.errors import CheckpointError, DataError, TargetError
from deepspec_core.registry import Registry
from deepspec_core.specbase import DraftSpecBase

from .layers import family_of, text_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# ---------------------------------------------------------------------------------------------
# data types
# ---------------------------------------------------------------------------------------------


@dataclass
class DraftBatch:
    """Right-padded batch of samples. Features may be bf16; the drafts cast as they need."""

    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64, 1 = real token
    loss_mask: torch.Tensor  # (B, T) bool, token t is a supervised target
    aux_hidden: torch.Tensor  # (B, T, K, H)
    final_hidden: torch.Tensor  # (B, T, H) after the target's final norm
    # The target's full-vocabulary logsumexp (B, T) fp32 and argmax (B, T) int64 at each position,
    # when the feature cache stores them (format 2, docs/cache.md); None → computed from final_hidden.
    target_lse: torch.Tensor | None = None
    target_top: torch.Tensor | None = None

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> DraftBatch:
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        mapped: dict[str, Any] = {k: None if v is None else fn(v) for k, v in values.items()}
        return DraftBatch(**mapped)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DraftBatch:
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> DraftBatch:
        return self._map(lambda x: x.pin_memory())

    def summary_rows(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The target summary at flat positions ``flat`` (N,) into B·T, or None where the batch has none."""
        if self.target_lse is None or self.target_top is None:
            return None
        return self.target_lse.reshape(-1)[flat], self.target_top.reshape(-1)[flat]

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(-1)


def collate_samples(samples: list[dict[str, torch.Tensor]]) -> DraftBatch:
    """Stack samples (dicts of input_ids (T,), loss_mask (T,), aux_hidden (T,K,H), final_hidden (T,H),
    optionally target_lse / target_top (T,)), right-padding to the longest; padding has loss_mask
    False and attention_mask 0. The target summary is kept only when every sample has it."""
    if not samples:
        raise ValueError("collate_samples needs at least one sample")
    b, t = len(samples), max(int(s["input_ids"].shape[0]) for s in samples)
    first = samples[0]
    _, k, h = first["aux_hidden"].shape
    ids = torch.zeros(b, t, dtype=torch.long)
    am = torch.zeros(b, t, dtype=torch.long)
    lm = torch.zeros(b, t, dtype=torch.bool)
    aux = torch.zeros(b, t, k, h, dtype=first["aux_hidden"].dtype)
    fin = torch.zeros(b, t, h, dtype=first["final_hidden"].dtype)
    summary = all("target_lse" in s for s in samples)  # all or nothing: one cache feeds a batch
    lse = torch.zeros(b, t, dtype=torch.float32) if summary else None
    top = torch.zeros(b, t, dtype=torch.long) if summary else None
    for i, s in enumerate(samples):
        n = int(s["input_ids"].shape[0])
        ids[i, :n] = s["input_ids"]
        am[i, :n] = 1
        lm[i, :n] = s["loss_mask"].bool()
        aux[i, :n] = s["aux_hidden"]
        fin[i, :n] = s["final_hidden"]
        if lse is not None and top is not None:
            lse[i, :n], top[i, :n] = s["target_lse"], s["target_top"]
    return DraftBatch(input_ids=ids, attention_mask=am, loss_mask=lm, aux_hidden=aux, final_hidden=fin,
                      target_lse=lse, target_top=top)


@dataclass
class DraftLoss:
    """Scalar training loss and detached metrics.

    metrics always hold: ``acc_per_pos`` (k,) greedy accuracy per draft position, ``accept_per_pos``
    (k,) expected acceptance 1 − TV per position, ``tau_greedy`` = 1 + Σ_k Π_{i≤k} correct_i and
    ``tau_expected`` = 1 + Σ_k Π_{i≤k} (1 − TV_i) averaged over rows (Eagle3 positions, block
    anchors) whose first prediction is supervised; an unsupervised position ends a row's chain.
    ``rows`` / ``tokens`` count what was averaged (for weighting across processes).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Proposal:
    """k drafted tokens per row.

    tokens (B, k) int64 target-vocabulary ids; probs (B, k) fp32 = q_i(token_i), the exact
    probability the token was sampled with (1.0 at temperature 0); dists (B, k, V) fp32 full draft
    distributions over the target vocabulary (None at temperature 0, where greedy verification
    needs none); confidences (B, k) fp32 per-slot confidence that the slot is accepted: DSpark's
    confidence head, else the draft's own probability of its token at T = 1 (None for drafts that
    report none). A draft-length policy may leave fewer than the k asked for.
    """

    tokens: torch.Tensor
    probs: torch.Tensor
    dists: torch.Tensor | None = None
    confidences: torch.Tensor | None = None

    @classmethod
    def from_steps(
        cls,
        tokens: list[torch.Tensor],
        probs: list[torch.Tensor],
        dists: list[torch.Tensor | None],
        confidences: list[torch.Tensor] | None = None,
    ) -> Proposal:
        """Stack per-step (B,) tokens / probs and (B, V) distributions (None when greedy) along k."""
        known = [d for d in dists if d is not None]
        return cls(
            tokens=torch.stack(tokens, 1),
            probs=torch.stack(probs, 1),
            dists=torch.stack(known, 1) if len(known) == len(dists) else None,
            confidences=torch.stack(confidences, 1) if confidences else None,
        )

    @classmethod
    def empty(cls, batch: int, vocab_size: int, device: torch.device, sampled: bool) -> Proposal:
        """No drafted token (a policy refused the first slot): the target will yield one token."""
        z = torch.zeros(batch, 0, device=device)
        return cls(tokens=z.long(), probs=z, dists=torch.zeros(batch, 0, vocab_size, device=device) if sampled else None,
                   confidences=z)

    def head(self, n: int) -> Proposal:
        """The first n drafted tokens (every field cut alike)."""
        return Proposal(
            tokens=self.tokens[:, :n],
            probs=self.probs[:, :n],
            dists=None if self.dists is None else self.dists[:, :n],
            confidences=None if self.confidences is None else self.confidences[:, :n],
        )


def block_metrics(correct: torch.Tensor, accept: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics of rows × positions: correct / accept (R, k) float, valid (R, k) bool (a prefix per row)."""
    with torch.no_grad():
        v = valid.float()
        per_pos = v.sum(0).clamp_min(1)
        rows = valid[:, 0]
        n_rows = rows.sum().clamp_min(1)
        tau_g = 1 + torch.cumprod(correct * v, -1).sum(-1)
        tau_e = 1 + torch.cumprod(accept * v, -1).sum(-1)
        return {
            "acc_per_pos": (correct * v).sum(0) / per_pos,
            "accept_per_pos": (accept * v).sum(0) / per_pos,
            "tau_greedy": (tau_g * rows).sum() / n_rows,
            "tau_expected": (tau_e * rows).sum() / n_rows,
            "rows": rows.sum().float(),
            "tokens": v.sum(),
        }


def build_vocab_mapping(token_counts: torch.Tensor, draft_vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d2t (Vd,) int64 offsets, t2d (V,) bool) keeping the ``draft_vocab_size`` most frequent tokens.

    Ties break towards the smaller id; draft ids follow target-id order, so d2t is non-decreasing.
    """
    counts = token_counts.flatten().double()
    v = counts.numel()
    if not 0 < draft_vocab_size <= v:
        raise DataError(f"draft vocabulary of {draft_vocab_size} tokens does not fit a vocabulary of {v}",
                        "set draft.draft_vocab_size between 1 and the target vocabulary size")
    # Stable sort on −count keeps smaller ids first among equal counts.
    order = torch.sort(-counts, stable=True).indices[:draft_vocab_size]
    keep = torch.sort(order).values
    t2d = torch.zeros(v, dtype=torch.bool)
    t2d[keep] = True
    d2t = keep - torch.arange(draft_vocab_size)
    return d2t.long(), t2d


def sample_from_logits(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """logits (B, V) → token (B,), its probability (B,) fp32, distribution (B, V) fp32 or None (greedy)."""
    if temperature <= 0:
        tok = logits.argmax(-1)
        return tok, torch.ones(tok.shape, dtype=torch.float32, device=tok.device), None
    dist = torch.softmax(logits.float() / temperature, dim=-1)
    tok = torch.multinomial(dist, 1, generator=generator).squeeze(-1)
    return tok, dist.gather(-1, tok[:, None]).squeeze(-1), dist


# ---------------------------------------------------------------------------------------------
# frozen target weights
# ---------------------------------------------------------------------------------------------


def _weight(x: torch.Tensor | nn.Module) -> torch.Tensor:
    if isinstance(x, nn.Module):
        w = x.weight
        assert isinstance(w, torch.Tensor)
        return w
    return x


def frozen_weights_from_model(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(embedding (V, H), lm_head (V, H)) of a loaded target, shared (no copy)."""
    try:
        from deepspec_core.targets import hf

        embed, head = hf.get_embed_tokens(model), hf.get_lm_head(model)
    except (ImportError, AttributeError):
        hf_model = cast("PreTrainedModel", model)
        embed, head = hf_model.get_input_embeddings(), hf_model.get_output_embeddings()
    return _weight(embed).detach(), _weight(head).detach()


def load_frozen_weights(target_dir: str | Path, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read only the embedding and lm_head of a target checkpoint directory (safetensors).

    A tied lm_head (no ``lm_head.weight`` stored) returns the embedding tensor twice.
    """
    from safetensors import safe_open

    files = sorted(Path(target_dir).glob("*.safetensors"))
    if not files:
        raise TargetError(f"no *.safetensors in {target_dir}", "point target.model at a Hugging Face checkpoint directory")
    found: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.endswith("embed_tokens.weight") and "embed" not in found and "per_layer" not in key:
                    found["embed"] = f.get_tensor(key)
                elif key.endswith("lm_head.weight"):
                    found["head"] = f.get_tensor(key)
    if "embed" not in found:
        raise TargetError(f"{target_dir} has no '*embed_tokens.weight' tensor", "is this a causal LM checkpoint?")
    embed = found["embed"]
    head = found.get("head", embed)
    if dtype is not None:
        embed, head = embed.to(dtype), (head.to(dtype) if head is not found["embed"] else embed.to(dtype))
    return embed, head


def load_target_layers(target_dir: str | Path, layer_ids: list[int], like: list[nn.Module],
                       norm_like: nn.Module | None = None) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The parameters of target decoder layers ``layer_ids``, keyed like the modules ``like`` (one each),
    and of the final norm beside them (keyed like ``norm_like``; empty when it is None).

    Reads ``<prefix>layers.<i>.<name>`` and ``<prefix>norm.<name>`` tensors from the checkpoint's
    safetensors; where several prefixes hold a layer (a multimodal checkpoint's towers), the one whose
    names and shapes fit the modules wins. Raises TargetError naming what is missing or mis-shaped.
    """
    import re

    from safetensors import safe_open

    files = sorted(Path(target_dir).glob("*.safetensors"))
    if not files:
        raise TargetError(f"no *.safetensors in {target_dir}", "point target.model at a Hugging Face checkpoint directory")
    layer_key = re.compile(r"^(.*?)layers\.(\d+)\.(.+)$")
    where: dict[str, Path] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            where.update((key, path) for key in f.keys())
    prefixes = sorted({m.group(1) for key in where if (m := layer_key.match(key))})
    wanted = [(f"layers.{i}.", module) for i, module in zip(layer_ids, like, strict=True)]
    if norm_like is not None:
        wanted.append(("norm.", norm_like))

    def read(prefix: str) -> list[dict[str, torch.Tensor]] | str:
        shapes = [{prefix + part + n: p.shape for n, p in module.named_parameters()} for part, module in wanted]
        missing = [key for part in shapes for key in part if key not in where]
        if missing:
            return f"'{missing[0]}' is missing"
        tensors: dict[str, torch.Tensor] = {}
        for path in {where[key] for part in shapes for key in part}:  # each file opened once
            with safe_open(str(path), framework="pt") as f:
                tensors.update((key, f.get_tensor(key)) for part in shapes for key in part if where[key] == path)
        bad = [(key, shape) for part in shapes for key, shape in part.items() if tensors[key].shape != shape]
        if bad:
            key, shape = bad[0]
            return f"'{key}' is {tuple(tensors[key].shape)}, the draft's {tuple(shape)}"
        return [{key[len(prefix + part):]: tensors[key] for key in keys}
                for (part, _), keys in zip(wanted, shapes, strict=True)]

    problem = f"no tensors named '*layers.<i>.*' in {target_dir}"
    for prefix in prefixes:
        found = read(prefix)
        if isinstance(found, str):
            problem = found
            continue
        return found[: len(layer_ids)], (found[-1] if norm_like is not None else {})
    raise TargetError(f"draft.init_layers: {problem}", "unset draft.init_layers, or check the target checkpoint")


# ---------------------------------------------------------------------------------------------
# the decoding contract, and the DraftModel base class that implements it
# ---------------------------------------------------------------------------------------------


class Drafter(Protocol):
    """What chain speculative decoding needs of a draft (the protocol in the module docstring).

    :class:`DraftModel` implements it; decoding and evaluation are typed against this alone, so a
    test double or another implementation plugs in unchanged.
    """

    @property
    def algo(self) -> str: ...  # the registered algorithm name (a class attribute of DraftModel)

    layer_ids: list[int]  # the target layers whose features ``start`` / ``commit`` receive

    def start(self, input_ids: torch.Tensor, aux_hidden: torch.Tensor) -> None: ...

    def propose(self, last_token: torch.Tensor, k: int, temperature: float = 0.0,
                generator: torch.Generator | None = None, policy: Any = None) -> Proposal: ...

    def commit(self, tokens: torch.Tensor, aux_hidden: torch.Tensor) -> None: ...

    def max_proposal(self) -> int | None: ...


FROZEN_PREFIXES = ("embed_tokens.", "target_head.")


class DraftModel(nn.Module):
    """Base of every draft. Subclasses set ``algo`` and implement forward_train / start / propose / commit.

    The target's embedding (``embed_tokens``) and lm_head (``target_head``) are shared frozen
    tensors: they are excluded from :meth:`trainable_state_dict` and checkpoints. Gemma-family
    embeddings are scaled by sqrt(H) as in the target; a final-logit softcap is applied likewise.
    """

    algo: ClassVar[str] = ""
    spec_class: ClassVar[type[DraftSpecBase]]
    # Buffers of a reduced draft vocabulary, registered by init_draft_vocab (absent otherwise).
    d2t: torch.Tensor
    t2d: torch.Tensor

    def __init__(self, draft_spec, target_spec, target_config, embed_weight, lm_head_weight):
        super().__init__()
        self.spec = draft_spec
        cfg = text_config(target_config)
        self.target_config = cfg
        self.family = family_of(target_config)
        self.hidden_size = cfg.hidden_size
        self.vocab_size = int(_weight(embed_weight).shape[0])
        self.layer_ids = list(target_spec.layer_ids)
        self.mask_token_id = target_spec.mask_token_id
        self.embed_tokens = nn.Embedding.from_pretrained(_weight(embed_weight).detach(), freeze=True)
        self.target_head = nn.Linear(self.hidden_size, self.vocab_size, bias=False)
        self.target_head.weight = nn.Parameter(_weight(lm_head_weight).detach(), requires_grad=False)
        self.embed_scale = float(cfg.hidden_size) ** 0.5 if cfg.model_type.startswith("gemma") else 1.0
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.draft_head: nn.Linear | None = None  # a reduced vocabulary's head: init_draft_vocab
        self.fused_losses = False  # Triton vocabulary losses (train.fused_losses, set by training)
        # Bytes the vocabulary losses may keep for backward (train.loss_memory_mb, set by training).
        self.loss_memory_budget = losses.DEFAULT_MEMORY_BUDGET

    @classmethod
    def from_spec(cls, draft_spec, target_spec, target_config, embed_weight, lm_head_weight) -> DraftModel:
        return cls(draft_spec, target_spec, target_config, embed_weight, lm_head_weight)

    # -- shared helpers ------------------------------------------------------------------------
    @property
    def param_dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if p.requires_grad).dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.embed_tokens(ids) * self.embed_scale).to(self.param_dtype)

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Frozen target lm_head (with the target's softcap) applied to draft hidden states."""
        # Through the module, so that decoding's packed weights (decode/cpu_linear.py) apply.
        logits = self.target_head(h.to(self.target_head.weight.dtype))
        if self.softcap:
            logits = self.softcap * torch.tanh(logits.float() / self.softcap)
        return logits

    # -- reduced draft vocabulary ---------------------------------------------------------------
    # With ``draft.draft_vocab_size`` = Vd < V the draft predicts over the Vd most frequent target
    # tokens only (:func:`build_vocab_mapping`): ``d2t[i]`` is the offset so target id = i + d2t[i],
    # ``t2d`` the boolean mask over the target vocabulary, and the head is a *trainable* (Vd, H)
    # matrix initialised from the target's rows (a small head can specialise; it is saved in
    # checkpoints with d2t/t2d). A (V, H) head costs most of a CPU training step on a 49k–152k
    # vocabulary; the price is that tokens outside the Vd are never drafted. Proposals always carry
    # target ids and distributions over the full target vocabulary, so verification is unchanged.
    def init_draft_vocab(self, draft_vocab_size: int | None) -> None:
        """Create the reduced head and its mapping buffers (identity mapping until
        :meth:`set_vocab_mapping`), or nothing when the full vocabulary is used."""
        if draft_vocab_size is None or draft_vocab_size >= self.vocab_size:
            return
        self.draft_head = nn.Linear(self.hidden_size, draft_vocab_size, bias=False)
        self.register_buffer("d2t", torch.zeros(draft_vocab_size, dtype=torch.long))
        t2d = torch.zeros(self.vocab_size, dtype=torch.bool)
        t2d[:draft_vocab_size] = True
        self.register_buffer("t2d", t2d)
        self._init_draft_head()

    @property
    def draft_vocab_size(self) -> int:
        return self.vocab_size if self.draft_head is None else self.draft_head.out_features

    @property
    def draft_ids(self) -> torch.Tensor | None:
        """Target ids of the draft vocabulary (Vd,), None with the full vocabulary."""
        if self.draft_head is None:
            return None
        return torch.arange(self.d2t.numel(), device=self.d2t.device) + self.d2t

    def set_vocab_mapping(self, d2t: torch.Tensor, t2d: torch.Tensor, init_head: bool = True) -> None:
        """Install a mapping from :func:`build_vocab_mapping`; re-initialise the head from the target rows."""
        if self.draft_head is None:
            raise DataError(f"this {self.algo} draft uses the full vocabulary",
                            "set draft.draft_vocab_size to use a reduced one")
        if d2t.shape != self.d2t.shape or t2d.shape != self.t2d.shape:
            raise DataError(f"vocab mapping shapes {tuple(d2t.shape)}/{tuple(t2d.shape)} do not match "
                            f"{tuple(self.d2t.shape)}/{tuple(self.t2d.shape)}", "rebuild it with the same sizes")
        self.d2t.copy_(d2t)
        self.t2d.copy_(t2d)
        if init_head:
            self._init_draft_head()

    def init_from_target(self, target_dir: str) -> None:
        """Start trainable layers from the target checkpoint in ``target_dir`` where the spec asks
        (block drafters' ``draft.init_layers``); the default draft starts from ``init_weights`` alone."""

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        """N(0, std) for every trainable Linear and Embedding weight, zero biases — the reference's
        HF ``post_init`` with ``initializer_range`` 0.02 (DeepSpec ``modeling/*``); norms keep 1.
        A reduced draft head then starts from the target's rows. ``std = 0`` keeps each module's own init."""
        if std <= 0:
            return
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.requires_grad:
                if module.weight.is_meta:
                    continue
                nn.init.normal_(module.weight, mean=0.0, std=std)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    nn.init.zeros_(bias)
        if self.draft_head is not None:
            self._init_draft_head()

    @torch.no_grad()
    def _init_draft_head(self) -> None:
        head, ids = self.draft_head, self.draft_ids
        assert head is not None and ids is not None, "only a reduced draft vocabulary has a draft head"
        if head.weight.is_meta:
            return
        w = self.target_head.weight[ids.to(self.target_head.weight.device)]
        head.weight.copy_(w.to(head.weight.dtype))

    def vocab_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Draft logits (…, Vd) of normed hidden states: the reduced head, or the frozen target head."""
        return self.draft_head(h) if self.draft_head is not None else self.head_logits(h)

    def to_target_ids(self, idx: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary indices → target ids (identity with the full vocabulary)."""
        ids = self.draft_ids
        return idx if ids is None else ids[idx]

    def in_draft_vocab(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of target ids the draft can propose (all True with the full vocabulary)."""
        return torch.ones_like(ids, dtype=torch.bool) if self.draft_head is None else self.t2d[ids]

    def full_vocab_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Draft logits (…, Vd) spread over the target vocabulary (…, V), −inf off the draft vocabulary."""
        ids = self.draft_ids
        if ids is None:
            return logits
        full = logits.new_full((*logits.shape[:-1], self.vocab_size), float("-inf"))
        return full.index_copy_(-1, ids, logits)

    def to_draft_labels(self, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Target ids → draft-vocabulary indices; ids outside the draft vocabulary → ``ignore_index``."""
        if self.draft_head is None:
            return labels
        index = torch.cumsum(self.t2d.long(), 0) - 1  # (V,) draft index of each kept target id
        return torch.where(self.t2d[labels], index[labels], torch.full_like(labels, ignore_index))

    def sample_tokens(self, logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
        """:func:`sample_from_logits` on draft logits (B, Vd), returned in the target vocabulary:
        token ids (B,), their probabilities (B,), distributions (B, V) or None (greedy), and the
        draft's confidence in each token (B,): its probability at T = 1, whatever the temperature."""
        idx, p, dist = sample_from_logits(logits, temperature, generator)
        conf = torch.softmax(logits.float(), -1).gather(-1, idx[:, None]).squeeze(-1)
        if dist is not None and self.draft_ids is not None:  # back to the target vocabulary (zeros elsewhere)
            dist = dist.new_zeros(dist.shape[0], self.vocab_size).index_copy_(1, self.draft_ids, dist)
        return self.to_target_ids(idx), p, dist, conf

    # -- trainable state ----------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen target embedding / lm_head (parameters and persistent buffers)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(FROZEN_PREFIXES)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        bad = [k for k in state if k.startswith(FROZEN_PREFIXES)]
        if bad:
            raise CheckpointError(f"checkpoint holds frozen target weights {bad[:2]}", "save with trainable_state_dict()")
        own = self.state_dict()
        for k, v in state.items():
            if k in own and tuple(own[k].shape) != tuple(v.shape):
                raise CheckpointError(
                    f"draft checkpoint tensor {k} has shape {tuple(v.shape)}, this {self.algo} model's is "
                    f"{tuple(own[k].shape)}",
                    "the draft was trained for a target of other sizes, or with another draft spec",
                )
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(FROZEN_PREFIXES)]
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"draft checkpoint does not match the {self.algo} model: missing {missing[:3]}, unexpected {unexpected[:3]}",
                "was it trained with a different draft spec (layers, vocab, heads)?",
            )

    def use_attention(self, backend: str) -> None:
        """Run every draft layer's attention with ``backend`` (:data:`~.layers.ATTENTION_BACKENDS`):
        dense SDPA, or flex attention with a block mask built from the same boolean mask."""
        from .layers import ATTENTION_BACKENDS, DraftLayer

        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}")
        for module in self.modules():
            if isinstance(module, DraftLayer):
                module.attention_backend = backend

    def compile_layers(self) -> None:
        """``torch.compile`` every decoder layer in place (``train.compile``; weight names unchanged).
        The layers are where a step's time goes; the rest of ``forward_train`` samples anchors and
        gathers supervised rows, whose data-dependent shapes compile poorly."""
        for layer in getattr(self, "layers", []):
            layer.compile(dynamic=True)

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- protocol -------------------------------------------------------------------------------
    def forward_train(self, batch: DraftBatch) -> DraftLoss:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: DraftBatch) -> DraftLoss:
        # DDP/FSDP wrap ``forward``; training calls the model like a function.
        return self.forward_train(batch)

    def teacher_forced_logits(self, batch: DraftBatch, anchors: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """What ``propose`` computes, teacher forced: anchors (B, N) positions a ≥ 1 → draft logits
        over the target vocabulary (B, N, k, V) where slot j predicts x_{a+1+j} from the tokens up to
        x_a and the target features of those before a (x_a is the decoder's ``last_token``). The
        one entry point tests use to compare an algorithm's decoding with its training."""
        raise NotImplementedError

    def start(self, input_ids: torch.Tensor, aux_hidden: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def propose(self, last_token: torch.Tensor, k: int, temperature: float = 0.0,
                generator: torch.Generator | None = None, policy: Any = None) -> Proposal:  # pragma: no cover
        """Draft up to k tokens after ``last_token`` (B,). With a draft-length ``policy``
        (:class:`~deepspec_core.decode.policy.DraftLength`) a draft may stop as soon as it refuses a
        slot, and returns only the slots it keeps."""
        raise NotImplementedError

    def commit(self, tokens: torch.Tensor, aux_hidden: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def max_proposal(self) -> int | None:
        """Most tokens one ``propose`` can return (block drafters), None when unbounded (Eagle3)."""
        return self.spec.max_k()


class DraftRegistry(Registry[type[DraftModel]]):
    """Draft classes by algorithm name. A class brings its spec class (``spec_class``), whose
    ``algo`` default must be the registered name: the spec is found from the name."""

    def add(self, name: str, obj: type[DraftModel]) -> None:
        spec_cls = getattr(obj, "spec_class", None)
        if spec_cls is None or spec_cls.model_fields["algo"].default != name:
            raise ValueError(f"draft {obj.__name__} registered as {name!r} needs a spec_class whose algo is {name!r}")
        super().add(name, obj)


DRAFTS = DraftRegistry("draft algorithm")


def build_draft(spec: Any, target_config, embed_tokens, lm_head) -> DraftModel:
    """The draft for ``spec.draft.algo`` (a RunSpec), sharing the given frozen target tensors/modules."""
    cls = DRAFTS.get(spec.draft.algo)
    draft = cls.from_spec(spec.draft, spec.target, target_config, _weight(embed_tokens), _weight(lm_head))
    draft.init_weights(spec.draft.init_std)
    return draft
