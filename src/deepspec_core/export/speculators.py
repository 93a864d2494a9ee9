"""The speculators format (what vLLM loads with ``vllm serve DIR`` and no flags), and SGLang's.

A deepspec checkpoint holds the draft's trainable tensors under our module names; an engine's draft
class declares its own names and reads a config with fields it does not default the way we do.
``vllm_export`` maps one to the other; ``sglang_export`` writes SGLang's flat layouts; both return
the config and tensors, written and checked by ``deepspec_core.export.export_draft``.

Facts every mapping below relies on (docs/serving.md): vLLM captures the target's hidden state
*before* layer j for aux id j, so aux ids are our layer ids + 1 (SGLang takes our 0-based ids);
vLLM's Eagle3 defaults ``norm_before_residual`` to true where our drafts keep the fused features
un-normed in the residual; vLLM's DSpark defaults ``sample_from_anchor`` to false; an explicit
``sliding_window_non_causal: false`` would make every vLLM DFlash layer causal, so it is never
written; vLLM's DFlash has only the original layout (the anchor drafts nothing), so a draft that
predicts from its anchor is served by vLLM's DSpark runtime with a Markov head that adds zero.
"""

from __future__ import annotations

from typing import Any

import torch

from deepspec_core.errors import ExportError

from .layouts import SGLANG_DFLASH, SGLANG_EAGLE3

SPECULATORS_VERSION = "0.9.0"
# Keys of a transformers config that describe a checkpoint, a task or a runtime, not the layer.
_NOT_LAYER = {"architectures", "auto_map", "transformers_version", "_name_or_path", "quantization_config",
              "torch_dtype", "dtype", "use_cache", "max_window_layers", "_attn_implementation", "tie_word_embeddings",
              "bos_token_id", "eos_token_id", "pad_token_id", "output_attentions", "output_hidden_states",
              "id2label", "label2id", "problem_type", "return_dict", "chunk_size_feed_forward", "is_encoder_decoder"}


def rename(state: dict[str, torch.Tensor], algo: str) -> dict[str, torch.Tensor]:
    """Our trainable tensors under the speculators/vLLM names. Raises ExportError for a tensor no
    engine has a place for (it would be lost)."""
    out = {}
    for name, t in state.items():
        new: str | None
        if name.startswith("layers.") and ".layer." in name:
            index, rest = name.removeprefix("layers.").split(".layer.", 1)
            new = f"layers.{index}.{rest}"
        else:
            new = {
                "fusion.fc.weight": "fc.weight",
                "fusion.norm.weight": "hidden_norm.weight",  # block drafters: RMSNorm after fc
                "hidden_norm.weight": "layers.0.hidden_norm.weight",  # Eagle3: the first layer's norm of h
                "norm.weight": "norm.weight",
                "draft_head.weight": "lm_head.weight",
                "d2t": "d2t",
                "t2d": "t2d",
                "seq_head.embed.weight": "markov_head.markov_w1.weight",
                "seq_head.proj.weight": "markov_head.markov_w2.weight",
                "confidence.proj.weight": "confidence_head.proj.weight",
                "confidence.proj.bias": "confidence_head.proj.bias",
            }.get(name)
        if new is None:
            raise ExportError(f"the {algo} draft's tensor {name} has no place in the serving format",
                              "it was trained with an option the engines do not implement (see docs/serving.md)")
        out[new] = t
    return out


def sglang_rename(state: dict[str, torch.Tensor], algo: str) -> dict[str, torch.Tensor]:
    """:func:`rename`, then SGLang's names: Eagle3's single layer is ``midlayer``; no ``t2d``."""
    out = {n: t for n, t in rename(state, algo).items() if n != "t2d"}
    if algo == "eagle3":
        out = {n.replace("layers.0.", "midlayer.", 1): t for n, t in out.items()}
    return out


def layer_config(draft: Any, target_config: Any) -> dict[str, Any]:
    """The draft layer's full HF config dict (vLLM applies no class defaults to what is missing)."""
    cfg = draft.layer_config.to_dict()
    out = {k: v for k, v in cfg.items() if k not in _NOT_LAYER and not k.startswith("_")}
    family = out.get("model_type", "qwen3")
    out.update(
        architectures=[f"{family.capitalize()}ForCausalLM" if family in ("qwen3", "llama") else cfg["architectures"][0]],
        num_hidden_layers=len(draft.layers),
        layer_types=["full_attention"] * len(draft.layers),
        sliding_window=None,
        use_sliding_window=False,
        tie_word_embeddings=False,  # the draft has no tied head of its own; the engine shares the target's
        target_hidden_size=draft.hidden_size,
        num_aux_hidden_states=len(draft.layer_ids),
        vocab_size=draft.vocab_size,
    )
    return out


def _refuse_unservable(draft: Any, engine: str) -> None:
    """What no engine computes the way we trained it: one line naming the reason."""
    if draft.embed_scale != 1.0:
        raise ExportError(
            f"{engine} cannot serve this draft: its target ({draft.target_config.model_type}) scales embeddings by "
            f"sqrt(hidden), which the draft applies and {engine}'s draft classes do not",
            "serve it through deepspec's own decoder (`deepspec eval`), or train for a target without scaled embeddings",
        )
    if getattr(draft, "mask_embedding", None) is not None:
        raise ExportError(f"{engine} export needs target.mask_token_id: this draft learned its own mask embedding",
                          "train with target.mask_token_id set to an unused token id")


Export = tuple[dict[str, Any], dict[str, torch.Tensor], int, list[str]]  # config.json, tensors, k, notes


def vllm_export(draft: Any, spec: Any, target_config: Any, target_path: str, k: int | None) -> Export:
    """(config.json, tensors, k, notes) of the speculators format for ``draft`` (a DraftModel).

    Raises ExportError for drafts vLLM would load without error and compute differently."""
    algo, d = spec.draft.algo, spec.draft
    _refuse_unservable(draft, "vLLM")
    if algo == "dspark" and d.sequential_head == "rnn":
        raise ExportError("vLLM's DSpark has the vanilla Markov head only, not the rnn head",
                          "train with draft.sequential_head = 'markov'")
    tl = layer_config(draft, target_config)
    family = tl["model_type"]
    tensors = rename(draft.trainable_state_dict(), algo)
    aux = [i + 1 for i in spec.target.layer_ids]  # vLLM captures before layer j: our id + 1
    notes: list[str] = []
    if draft.softcap:
        notes.append("vLLM applies no logit softcap to draft logits: greedy drafts are unchanged, sampled ones differ")
    config: dict[str, Any] = {"speculators_version": SPECULATORS_VERSION, "transformer_layer_config": tl,
                              "draft_vocab_size": draft.draft_vocab_size}
    if algo == "eagle3":
        if family not in ("qwen3", "llama"):
            raise ExportError(f"vLLM's Eagle3 has Qwen3 and Llama layers only, not {family}",
                              "train for a Qwen3- or Llama-family target")
        kind, k = "eagle3", k if k is not None else d.ttt_length
        if k > d.ttt_length:
            notes.append(f"k = {k} drafts beyond the {d.ttt_length} steps of training-time test the draft was "
                         "trained with: expect lower acceptance at the later positions")
        config.update(architectures=["Eagle3Speculator"], eagle_aux_hidden_state_layer_ids=aux,
                      norm_before_residual=False, norm_before_fc=False, fc_norm=False, norm_output=False)
    elif algo in ("dflash", "dspark"):
        if family != "qwen3":
            raise ExportError(f"vLLM's DFlash/DSpark layers are Qwen3 layers (with q/k norms); this draft's are {family}",
                              "train for a Qwen3-family target (or a target deepspec drafts with Qwen3 layers)")
        anchor = d.predict_from_anchor
        kind = "dspark" if (algo == "dspark" or anchor) else "dflash"
        k = k if k is not None else d.block_size
        if k != d.block_size:  # the block's slots see one another: a shorter block drafts other tokens
            raise ExportError(f"vLLM drafts a block of exactly k slots; this draft was trained on blocks of "
                              f"{d.block_size}", f"export with k = {d.block_size} (leave --k unset)")
        if kind == "dspark":
            notes.append("vLLM runs DSpark with its GPU model runner only: serve this export on a GPU machine")
        config.update(aux_hidden_state_layer_ids=aux, mask_token_id=spec.target.mask_token_id,
                      block_size=d.block_size if anchor else d.block_size + 1, sample_from_anchor=anchor)
        if kind == "dflash":
            config["architectures"] = ["DFlashSpeculator"]
        else:
            config["architectures"] = ["DSparkSpeculator"]
            if algo == "dflash":  # served by DSpark's runtime: a rank-1 Markov head that adds exactly zero
                notes.append("DFlash that predicts from its anchor is served by vLLM's DSpark runtime (its DFlash "
                             "runtime has only the original layout)")
                h = tensors["fc.weight"]
                tensors["markov_head.markov_w1.weight"] = h.new_zeros(draft.vocab_size, 1)
                tensors["markov_head.markov_w2.weight"] = h.new_zeros(draft.draft_vocab_size, 1)
                config.update(markov_rank=1, markov_head_type="vanilla", enable_confidence_head=False,
                              confidence_head_with_markov=False)
            else:
                rank = d.markov_rank if draft.seq_head is not None else 0
                config.update(markov_rank=rank, markov_head_type="vanilla",
                              enable_confidence_head=draft.confidence is not None,
                              confidence_head_with_markov=rank > 0)
    else:
        raise ExportError(f"no serving format is known for algo {algo!r}", "export eagle3, dflash or dspark drafts")
    config["speculators_model_type"] = kind
    config["speculators_config"] = {
        "algorithm": kind,
        "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": int(k), "verifier_accept_k": 1,
                              "accept_tolerance": 0.0}],
        "default_proposal_method": "greedy",
        "verifier": {"name_or_path": target_path, "architectures": list(getattr(target_config, "architectures", []))},
    }
    return config, tensors, k, notes


def sglang_export(draft: Any, spec: Any, target_config: Any, target_path: str, k: int | None) -> Export:
    """(config.json, tensors, k, notes) of SGLang's flat format. Raises ExportError for drafts SGLang
    would load silently wrong (it skips tensor names it does not know)."""
    algo, d = spec.draft.algo, spec.draft
    _refuse_unservable(draft, "SGLang")
    tl = layer_config(draft, target_config)
    tensors = sglang_rename(draft.trainable_state_dict(), algo)
    if algo == "eagle3":
        problems = [why for bad, why in [
            (tl["model_type"] != "llama", f"its layers are {tl['model_type']} layers (q/k norms), SGLang's are Llama's"),
            (len(spec.target.layer_ids) != 3, f"it reads {len(spec.target.layer_ids)} target layers, SGLang's fc 3"),
            (len(draft.layers) != 1, f"it has {len(draft.layers)} layers; SGLang's extra layers drop the residual"),
        ] if bad]
        if problems:
            raise ExportError(f"SGLang's LlamaForCausalLMEagle3 would load this draft silently wrong: {'; '.join(problems)}",
                              "export with --format vllm")
        config = {**tl, "architectures": [SGLANG_EAGLE3], "num_hidden_layers": 1,
                  "draft_vocab_size": draft.draft_vocab_size,
                  "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(spec.target.layer_ids)}}
        return config, tensors, k if k is not None else d.default_k(), []
    if algo == "dflash":
        if k is not None and k != d.block_size:
            raise ExportError(f"SGLang drafts a DFlash block of exactly k slots; this draft was trained on blocks of "
                              f"{d.block_size}", f"export with k = {d.block_size} (leave --k unset)")
        problems = [why for bad, why in [
            (tl["model_type"] != "qwen3", f"its layers are {tl['model_type']} layers; SGLang's DFlash has Qwen3 layers"),
            (d.predict_from_anchor, "it predicts from its anchor; SGLang's DFlash drafts from mask slots only"),
            (draft.draft_head is not None, "it has a reduced vocabulary; SGLang's DFlash uses the target's lm_head"),
        ] if bad]
        if problems:
            raise ExportError(f"SGLang's DFlashDraftModel would load this draft silently wrong: {'; '.join(problems)}",
                              "export with --format vllm, or train DFlash with draft.predict_from_anchor = false")
        config = {**tl, "architectures": [SGLANG_DFLASH], "block_size": d.block_size + 1,
                  "dflash_config": {"mask_token_id": spec.target.mask_token_id,
                                    "target_layer_ids": list(spec.target.layer_ids), "block_size": d.block_size + 1}}
        return config, tensors, d.block_size, []
    raise ExportError(f"no SGLang format is exported for algo {algo!r}",
                      "export with --format vllm (SGLang's DSpark layout is not verified by deepspec)")
