"""Draft decoder layers built from the target's own architecture family.

The draft reuses the family's transformers modules (decoder layer with its projections, q/k norms,
MLP and RMSNorm; rotary embedding) so its weights have the family's names and numerics, but runs
its own attention: the drafts need key/value prefixes (Eagle3's training-time-test entries,
DFlash's injected target context, decode caches) and explicit boolean masks, which the stock
forward does not take. Every draft builds a boolean mask (True = may attend); :func:`attention`
runs it with ``scaled_dot_product_attention`` (dense; the CPU path) or with flex attention, whose
block mask skips every key block the mask rules out (Eagle3's training-time test sees about
T²/2 + iT of its T·(i+1)T scores at step i; a DFlash block sees its context and itself). The
choice is made once per draft (:meth:`DraftModel.use_attention`, ``train.attention``).

Supported families (``config.model_type``): qwen3, qwen2, llama, mistral (pre-norm layers),
gemma, gemma3_text (sandwich norms, scaled embeddings). Other targets (gemma2, gemma4, ...) get
Qwen3 layers sized like the target: the draft's architecture need not match the target's, only
the hidden size of the shared embedding and lm_head does.
"""

from __future__ import annotations

import copy
import functools
import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_FAMILIES = {
    # model_type: (module, class prefix)
    "qwen3": ("qwen3", "Qwen3"),
    "qwen2": ("qwen2", "Qwen2"),
    "llama": ("llama", "Llama"),
    "mistral": ("mistral", "Mistral"),
    "gemma": ("gemma", "Gemma"),
    "gemma3_text": ("gemma3", "Gemma3"),
}


@dataclass(frozen=True)
class Family:
    name: str
    decoder_layer: type
    rms_norm: type
    rotary: type
    native: bool  # False: Qwen3 layers standing in for an unsupported target family


def text_config(target_config):
    """The text part of a (possibly multimodal) target config."""
    return target_config.get_text_config() if hasattr(target_config, "get_text_config") else target_config


def family_of(target_config) -> Family:
    cfg = text_config(target_config)
    model_type = getattr(cfg, "model_type", "")
    module, prefix = _FAMILIES.get(model_type, _FAMILIES["qwen3"])
    mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    return Family(
        name=model_type if model_type in _FAMILIES else "qwen3",
        decoder_layer=getattr(mod, f"{prefix}DecoderLayer"),
        rms_norm=getattr(mod, f"{prefix}RMSNorm"),
        rotary=getattr(mod, f"{prefix}RotaryEmbedding"),
        native=model_type in _FAMILIES,
    )


def draft_layer_config(target_config, num_layers: int, intermediate_size: int | None = None):
    """A config for ``num_layers`` draft layers with the target's widths; full attention everywhere."""
    cfg = text_config(target_config)
    fam = family_of(target_config)
    if not fam.native:
        from transformers import Qwen3Config

        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rope = getattr(cfg, "rope_parameters", None) or {}
        rope = rope.get("full_attention", rope) if isinstance(rope, dict) else {}
        cfg = Qwen3Config(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=getattr(cfg, "intermediate_size", 4 * cfg.hidden_size),
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
            head_dim=head_dim,
            rms_norm_eps=getattr(cfg, "rms_norm_eps", 1e-6),
            max_position_embeddings=getattr(cfg, "max_position_embeddings", 32768),
            rope_parameters={"rope_type": "default", "rope_theta": rope.get("rope_theta", 1e6)},
        )
    else:
        cfg = copy.deepcopy(cfg)
    cfg.num_hidden_layers = num_layers
    if intermediate_size:
        cfg.intermediate_size = intermediate_size
    if hasattr(cfg, "layer_types") and cfg.layer_types is not None:
        cfg.layer_types = ["full_attention"] * num_layers
    cfg.sliding_window = None
    cfg.attention_dropout = 0.0
    cfg._attn_implementation = "sdpa"
    return cfg


class Rotary(nn.Module):
    """cos/sin for position ids (B, S) → two (B, S, head_dim) tensors in the dtype of ``like``."""

    def __init__(self, family: Family, config):
        super().__init__()
        self.rope = family.rotary(config)
        self.needs_layer_type = family.name == "gemma3_text"

    def forward(self, like: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.needs_layer_type:
            return self.rope(like, position_ids, "full_attention")
        return self.rope(like, position_ids)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x (B, h, S, D) rotated by cos/sin (B, S, D)."""
    cos, sin = (t.unsqueeze(1).to(x.dtype) for t in rope)
    return x * cos + _rotate_half(x) * sin


ATTENTION_BACKENDS = ("sdpa", "flex")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
              backend: str = "sdpa") -> torch.Tensor:
    """q (B, h, Q, D), k/v (B, h_kv, S, D), mask (B|1, 1, Q, S) bool → (B, h, Q, D).

    ``flex``: the same mask as a flex-attention block mask (blocks the mask rules out are never
    computed); compiled on CUDA, eager elsewhere (slow: for parity tests)."""
    gqa = q.shape[1] != k.shape[1]
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    dense = mask[:, 0]  # (B|1, Q, S)
    per_row = dense.shape[0] > 1

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[b if per_row else 0, q_idx, kv_idx]

    cuda = q.device.type == "cuda"
    block = create_block_mask(mask_mod, B=q.shape[0] if per_row else None, H=None, Q_LEN=q.shape[2],
                              KV_LEN=k.shape[2], device=q.device, _compile=cuda)
    run = _compiled_flex() if cuda else flex_attention
    return run(q, k, v, block_mask=block, scale=scale, enable_gqa=gqa)


@functools.cache
def _compiled_flex():
    """flex_attention compiled once per process (wrapping it at every call would re-enter dynamo)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


class DraftLayer(nn.Module):
    """One family decoder layer with an attention that takes K/V prefixes and boolean masks.

    ``in_features`` > hidden replaces q/k/v projections by wider ones (Eagle3's first layer
    reads concat(embed, features) of width 2H). The wrapped module is kept as ``self.layer`` so
    weight names are the family's (``layer.self_attn.q_proj.weight`` ...).
    """

    def __init__(self, family: Family, config, layer_idx: int, in_features: int | None = None):
        super().__init__()
        self.layer = family.decoder_layer(config, layer_idx)
        attn = self.layer.self_attn
        self.head_dim = attn.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.scaling = attn.scaling
        self.attention_backend = "sdpa"  # set for the whole draft by DraftModel.use_attention
        if in_features and in_features != config.hidden_size:
            bias = bool(getattr(config, "attention_bias", False))
            attn.q_proj = nn.Linear(in_features, self.num_heads * self.head_dim, bias=bias)
            attn.k_proj = nn.Linear(in_features, self.num_kv_heads * self.head_dim, bias=bias)
            attn.v_proj = nn.Linear(in_features, self.num_kv_heads * self.head_dim, bias=bias)
        # Gemma-style layers normalise the attention and MLP outputs too ("sandwich" norms).
        self.sandwich = hasattr(self.layer, "pre_feedforward_layernorm")

    def input_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.input_layernorm(x)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, n, self.head_dim).transpose(1, 2)  # (B, n, S, D)

    def query(self, a: torch.Tensor, rope) -> torch.Tensor:
        attn = self.layer.self_attn
        q = self._heads(attn.q_proj(a), self.num_heads)
        if hasattr(attn, "q_norm"):
            q = attn.q_norm(q)
        return apply_rope(q, rope)

    def key_value(self, a: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values (B, h_kv, S, D) of attention inputs ``a`` (B, S, in)."""
        attn = self.layer.self_attn
        k = self._heads(attn.k_proj(a), self.num_kv_heads)
        if hasattr(attn, "k_norm"):
            k = attn.k_norm(k)
        v = self._heads(attn.v_proj(a), self.num_kv_heads)
        return apply_rope(k, rope), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q (B, h, Q, D), k/v (B, h_kv, S, D), mask (B|1, 1, Q, S) bool → o_proj output (B, Q, H)."""
        out = attention(q, k.to(q.dtype), v.to(q.dtype), mask, self.scaling, self.attention_backend)
        b, _, s, _ = out.shape
        return self.layer.self_attn.o_proj(out.transpose(1, 2).reshape(b, s, -1))

    def finish(self, residual: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """Residual add of the attention output, then the MLP block."""
        lyr = self.layer
        if self.sandwich:
            h = residual + lyr.post_attention_layernorm(attn_out)
            return h + lyr.post_feedforward_layernorm(lyr.mlp(lyr.pre_feedforward_layernorm(h)))
        h = residual + attn_out
        return h + lyr.mlp(lyr.post_attention_layernorm(h))

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        prefix_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, Q, H) → (output (B, Q, H), this call's own rotated (k, v)).

        ``prefix_kv`` keys/values come before this call's own keys in the mask's S axis.
        ``attn_input`` overrides the normalised input of q/k/v (Eagle3's 2H input).
        """
        a = self.input_norm(x) if attn_input is None else attn_input
        q = self.query(a, rope)
        k, v = self.key_value(a, rope)
        if prefix_kv is not None:
            k_all, v_all = torch.cat([prefix_kv[0].to(k.dtype), k], 2), torch.cat([prefix_kv[1].to(v.dtype), v], 2)
        else:
            k_all, v_all = k, v
        return self.finish(x, self.attend(q, k_all, v_all, mask)), (k, v)


class FeatureFusion(nn.Module):
    """RMSNorm(fc(concat of the K captured layers)): (…, K, H) → (…, H). ``norm=False`` skips the norm."""

    def __init__(self, family: Family, num_layers: int, hidden: int, eps: float, norm: bool = True):
        super().__init__()
        self.fc = nn.Linear(num_layers * hidden, hidden, bias=False)
        self.norm = family.rms_norm(hidden, eps=eps) if norm else None

    def forward(self, aux_hidden: torch.Tensor) -> torch.Tensor:
        x = self.fc(aux_hidden.flatten(-2).to(self.fc.weight.dtype))
        return self.norm(x) if self.norm is not None else x


KV = tuple[torch.Tensor, torch.Tensor]


def cat_kv(prev: list[KV] | None, new: list[KV]) -> list[KV]:
    """Append per-layer keys/values (B, h_kv, S, D) along S; ``prev`` None starts a cache."""
    if prev is None:
        return new
    return [(torch.cat([pk, k], 2), torch.cat([pv, v], 2)) for (pk, pv), (k, v) in zip(prev, new, strict=True)]
