"""What each serving engine's draft class declares: tensor names and shapes, computed from an
exported config alone — independently of how the exporter renamed our tensors — so the exporter
can check its own output. No engine detects a missing tensor (vLLM leaves it uninitialised,
SGLang skips unknown names), so this table is the guard.

Sources (vLLM 0.32.0, ``vllm/model_executor/models/``): ``qwen3_eagle3.py`` / ``llama_eagle3.py``
(Eagle3: ``fc``, ``layers.0.hidden_norm``, the first layer's q/k/v reading 2H, ``norm``, ``lm_head``
and ``d2t`` with a reduced vocabulary), ``qwen3_dflash.py`` (``fc``, ``hidden_norm``, Qwen3 layers with
q/k norms, ``norm``), ``qwen3_dspark.py`` (DFlash's plus ``markov_head.markov_w{1,2}`` and
``confidence_head.proj``). SGLang (``python/sglang/srt/models/``): ``llama_eagle3.py``
(``LlamaForCausalLMEagle3``: ``midlayer.*``, no q/k norms) and ``dflash.py`` (``DFlashDraftModel``).
docs/serving.md has the facts behind each entry.
"""

from __future__ import annotations

from typing import Any

Shapes = dict[str, tuple[int, ...]]
SGLANG_EAGLE3, SGLANG_DFLASH = "LlamaForCausalLMEagle3", "DFlashDraftModel"  # SGLang's draft classes


def is_sglang_config(config: dict[str, Any]) -> bool:
    return config.get("architectures") in ([SGLANG_EAGLE3], [SGLANG_DFLASH])


def _layer(prefix: str, c: dict[str, Any], in_features: int, qk_norm: bool, hidden_norm: bool = False) -> Shapes:
    h, d, i = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    out: Shapes = {
        f"{prefix}input_layernorm.weight": (h,),
        f"{prefix}self_attn.q_proj.weight": (q, in_features),
        f"{prefix}self_attn.k_proj.weight": (kv, in_features),
        f"{prefix}self_attn.v_proj.weight": (kv, in_features),
        f"{prefix}self_attn.o_proj.weight": (h, q),
        f"{prefix}post_attention_layernorm.weight": (h,),
        f"{prefix}mlp.gate_proj.weight": (i, h),
        f"{prefix}mlp.up_proj.weight": (i, h),
        f"{prefix}mlp.down_proj.weight": (h, i),
    }
    if qk_norm:
        out |= {f"{prefix}self_attn.q_norm.weight": (d,), f"{prefix}self_attn.k_norm.weight": (d,)}
    if hidden_norm:
        out[f"{prefix}hidden_norm.weight"] = (h,)
    return out


def _vocab(c: dict[str, Any], draft_vocab: int, vocab: int) -> Shapes:
    if draft_vocab >= vocab:
        return {}  # the engine shares the target's lm_head
    return {"lm_head.weight": (draft_vocab, c["hidden_size"]), "d2t": (draft_vocab,), "t2d": (vocab,)}


def vllm_tensors(config: dict[str, Any], target_vocab: int) -> Shapes:
    """Tensor names and shapes vLLM's draft class for a speculators ``config`` loads."""
    c = config["transformer_layer_config"]
    kind, h, n = config["speculators_model_type"], c["hidden_size"], c["num_hidden_layers"]
    qk_norm = c.get("model_type") == "qwen3"
    vd = config.get("draft_vocab_size") or target_vocab
    if kind == "eagle3":
        k = len(config["eagle_aux_hidden_state_layer_ids"])
        out: Shapes = {"fc.weight": (h, k * h), "norm.weight": (h,)}
        for j in range(n):
            out |= _layer(f"layers.{j}.", c, 2 * h if j == 0 else h, qk_norm, hidden_norm=j == 0)
        return out | _vocab(c, vd, target_vocab)
    k = len(config["aux_hidden_state_layer_ids"])
    out = {"fc.weight": (h, k * h), "hidden_norm.weight": (h,), "norm.weight": (h,)}
    for j in range(n):
        out |= _layer(f"layers.{j}.", c, h, qk_norm=True)
    out |= _vocab(c, vd, target_vocab)
    if kind == "dspark":
        r = config.get("markov_rank") or 0
        if r:
            out |= {"markov_head.markov_w1.weight": (target_vocab, r), "markov_head.markov_w2.weight": (vd, r)}
        if config.get("enable_confidence_head"):
            width = h + (r if config.get("confidence_head_with_markov") else 0)
            out |= {"confidence_head.proj.weight": (1, width), "confidence_head.proj.bias": (1,)}
    return out


def sglang_tensors(config: dict[str, Any], target_vocab: int) -> Shapes:
    """Tensor names and shapes SGLang's draft class for an exported ``config`` loads."""
    h = config["hidden_size"]
    if config["architectures"] == [SGLANG_EAGLE3]:
        out = {"fc.weight": (h, 3 * h), "norm.weight": (h,)}
        out |= _layer("midlayer.", config, 2 * h, qk_norm=False, hidden_norm=True)
        vd = config.get("draft_vocab_size") or target_vocab
        return out | {k: v for k, v in _vocab(config, vd, target_vocab).items() if k != "t2d"}
    k = len(config["dflash_config"]["target_layer_ids"])
    out = {"fc.weight": (h, k * h), "hidden_norm.weight": (h,), "norm.weight": (h,)}
    for j in range(config["num_hidden_layers"]):
        out |= _layer(f"layers.{j}.", config, h, qk_norm=True)
    return out
