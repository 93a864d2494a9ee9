"""Load a frozen target (any Hugging Face causal LM) and capture the features drafts condition on.

:func:`capture_features` is THE one function that produces target features: the cache writer,
online training and speculative decoding all call it, so their features match by construction.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from deepspec_core.errors import TargetError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class Target:
    """A loaded frozen target: model in eval mode, its tokenizer, and where it came from."""

    model: nn.Module
    tokenizer: Any
    name: str  # what the user asked for: hub id, directory or "tiny"
    path: str  # what was loaded: the resolved directory or hub id
    revision: str | None
    device: torch.device
    dtype: torch.dtype

    @property
    def config(self) -> Any:
        return self.model.config


@dataclass
class TargetFeatures:
    aux_hidden: torch.Tensor  # (B, T, K, H) outputs of the captured decoder layers
    final_hidden: torch.Tensor  # (B, T, H) after the final norm: lm_head(final_hidden) == logits
    logits: torch.Tensor | None = None  # (B, T, V) when asked for
    past_key_values: Any = None  # the updated KV cache when use_cache


# -- resolution and loading --------------------------------------------------------------------


def resolve_model(name: str) -> str:
    """Map the embedded names ('tiny', 'tiny-quick') to their built directory; pass others through."""
    from deepspec_core.targets import tiny

    built = tiny.resolve_tiny(name)
    return str(built) if built is not None else name


def resolve_device(device: str = "auto") -> torch.device:
    """The GPU where there is one for "auto", else the named device, checked (SpecError when unusable)."""
    from deepspec_core.distributed import explicit_device

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return explicit_device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise TargetError(f"unknown dtype {dtype!r}", f"choose one of: auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def _offline(name: str) -> bool:
    """A hub id while the hub is unreachable: load from the local cache only (no retries)."""
    from deepspec_core.hub import hub_reachable

    return not _looks_local(name) and not hub_reachable()


def _load_error(what: str, name: str, err: Exception) -> TargetError:
    from deepspec_core.hub import OFFLINE_HINT

    if _looks_local(name) and not Path(name).expanduser().exists():
        return TargetError(f"target directory {name} does not exist", "check target.model")
    if _looks_local(name):
        return TargetError(f"cannot load the {what} from {name}: {err}", "is it a Hugging Face model directory?")
    if _offline(name):
        return TargetError(f"the {what} of {name!r} is not in the local Hugging Face cache and the hub is unreachable",
                           OFFLINE_HINT)
    return TargetError(
        f"cannot load the {what} {name!r} from the hub: {type(err).__name__}",
        "check the id and network access, or download it and point target.model at the directory",
    )


def load_config(target_spec: Any) -> Any:
    """The target's config alone (no weights) from a :class:`~deepspec_core.spec.TargetSpec`."""
    from transformers import AutoConfig

    path = resolve_model(target_spec.model)
    try:
        return AutoConfig.from_pretrained(
            path, revision=target_spec.revision, trust_remote_code=target_spec.trust_remote_code,
            local_files_only=_offline(path),
        )
    except (OSError, ValueError) as err:
        raise _load_error("config", path, err) from err


def load_tokenizer(
    model: str, revision: str | None = None, chat_template: str | None = None, trust_remote_code: bool = False
) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model(model)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                            local_files_only=_offline(path))
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", path, err) from err
    if chat_template:
        template = Path(chat_template).expanduser()
        if not template.is_file():
            raise TargetError(f"target.chat_template {chat_template} is not a file", "give a Jinja template file")
        tok.chat_template = template.read_text()
    if tok.pad_token_id is None:
        # Padding is always masked; any id works, eos is the conventional choice.
        tok.pad_token = tok.eos_token
    return tok


def load_target(
    model: str,
    revision: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    chat_template: str | None = None,
    trust_remote_code: bool = False,
) -> Target:
    """Load model + tokenizer from a hub id, a local directory, or an embedded name; frozen, eval mode."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    tokenizer = load_tokenizer(path, revision, chat_template, trust_remote_code)
    try:
        net: nn.Module = AutoModelForCausalLM.from_pretrained(
            path, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code,
            local_files_only=_offline(path),
        )
    except (OSError, ValueError) as err:
        raise _load_error("model", path, err) from err
    net.to(dev).eval().requires_grad_(False)
    return Target(net, tokenizer, name=model, path=path, revision=revision, device=dev, dtype=torch_dtype)


def load_target_from_spec(target_spec: Any, device: str = "auto") -> Target:
    """Load the target of a :class:`~deepspec_core.spec.TargetSpec` (check the run against its
    config first with :func:`deepspec_core.spec.check_against_target`)."""
    return load_target(
        target_spec.model,
        revision=target_spec.revision,
        dtype=target_spec.dtype,
        device=device,
        chat_template=target_spec.chat_template,
        trust_remote_code=target_spec.trust_remote_code,
    )


# -- model anatomy -----------------------------------------------------------------------------


def text_config(config: Any) -> Any:
    """The language-model part of a config (multimodal configs nest it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def num_hidden_layers(config: Any) -> int:
    return int(text_config(config).num_hidden_layers)


def base_model(model: nn.Module) -> nn.Module:
    """The decoder stack (embeddings → layers → final norm) without the lm_head."""
    if hasattr(model, "get_decoder"):
        base = cast("PreTrainedModel", model).get_decoder()
    else:
        base = getattr(model, "model", model)
    if not hasattr(base, "layers") and hasattr(base, "language_model"):
        base = base.language_model
    if not hasattr(base, "layers") or not hasattr(base, "norm"):
        raise TargetError(
            f"unsupported target architecture {type(model).__name__}: no decoder layers / final norm found",
            "deepspec supports Hugging Face causal LMs with `model.layers` and `model.norm` (Qwen3, Llama, Gemma, ...)",
        )
    return base


# A target is a transformers PreTrainedModel; it travels typed as nn.Module.
def get_embed_tokens(model: nn.Module) -> nn.Module:
    """The input embedding (an ``nn.Embedding`` or a subclass of it)."""
    return cast("PreTrainedModel", model).get_input_embeddings()


def get_lm_head(model: nn.Module) -> nn.Module:
    """The output projection (an ``nn.Linear``)."""
    return cast("PreTrainedModel", model).get_output_embeddings()


def tokenizer_hash(tokenizer: Any) -> str:
    """Hash of the vocabulary and special tokens: two tokenizers with equal hashes tokenize alike."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(str(t) for t in tokenizer.all_special_tokens)
    return hashlib.sha256(repr((vocab, special)).encode()).hexdigest()[:16]


def weights_fingerprint(model: str) -> str | None:
    """Fingerprint of a local target's config and weight files (:func:`deepspec_core.io.files_fingerprint`);
    None for a hub id (its revision identifies it)."""
    from deepspec_core.io import files_fingerprint

    path = Path(resolve_model(model)).expanduser()
    return files_fingerprint(path, ("config.json", "*.safetensors", "*.bin")) if path.is_dir() else None


def chat_template_hash(tokenizer: Any) -> str:
    return hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()[:16]


# -- THE capture function ----------------------------------------------------------------------


def _cache_of(out: Any) -> Any:
    return getattr(out, "past_key_values", None) if getattr(out, "cache", None) is None else out.cache


def _output_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def capture_features(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    layer_ids: list[int] | tuple[int, ...] = (),
    past_key_values: Any = None,
    position_ids: torch.Tensor | None = None,
    return_logits: bool = False,
    use_cache: bool = False,
) -> TargetFeatures:
    """Run the target on ``input_ids`` (B, T) and capture the outputs of ``layer_ids`` and the final norm.

    Layer ids count decoder layers from 0, so ``aux_hidden[..., k, :]`` equals
    ``output_hidden_states[layer_ids[k] + 1]``. Without explicit ``position_ids`` they are derived
    from ``attention_mask`` so that left padding does not shift real tokens' positions.
    """
    base = base_model(model)
    layers = cast(nn.ModuleList, base.layers)  # base_model checked it exists
    bad = [i for i in layer_ids if not 0 <= i < len(layers)]
    if bad:
        raise TargetError(f"layer ids {bad} are beyond the target's depth ({len(layers)} decoder layers)")
    if position_ids is None and attention_mask is not None:
        # attention_mask spans cached + new tokens; counting real tokens keeps left padding from
        # shifting the positions of real ones.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        layers[i].register_forward_hook(lambda _m, _a, out, i=i: captured.__setitem__(i, _output_tensor(out)))
        for i in layer_ids
    ]
    # transformers >= 5.24 renamed the forward kwarg `past_key_values` to `cache`.
    cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    try:
        out = base(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{cache_kw: past_key_values},
        )
    finally:
        for h in hooks:
            h.remove()
    final = out.last_hidden_state  # (B, T, H), already through the final norm
    aux = torch.stack([captured[i] for i in layer_ids], dim=2) if layer_ids else final.new_zeros(*final.shape[:2], 0, final.shape[-1])
    logits = get_lm_head(model)(final) if return_logits else None
    if logits is not None and getattr(text_config(model.config), "final_logit_softcapping", None):
        cap = text_config(model.config).final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    return TargetFeatures(aux, final, logits, _cache_of(out) if use_cache else None)
