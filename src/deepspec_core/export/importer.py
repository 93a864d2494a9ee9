"""Reading a speculators-format directory (ours or a public one) back into a deepspec draft, so
`deepspec eval --draft DIR` scores it under our protocol. The inverse of :mod:`.speculators`:
the spec from the config (aux ids − 1, k, block layout, Markov rank, vocabulary), the weights
renamed back, the target from ``verifier.name_or_path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from deepspec_core.errors import CheckpointError

from .layouts import is_sglang_config
from .speculators import rename


def is_speculators_dir(path: Path) -> bool:
    """A speculators-format draft directory. Raises CheckpointError for SGLang's flat format, which
    deepspec exports but does not read back."""
    config = path / "config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text())
    if is_sglang_config(data):
        raise CheckpointError(f"{path} is in SGLang's format, which deepspec does not read back",
                              "evaluate the run it was exported from, or its --format vllm export")
    return "speculators_config" in data


def _draft_section(config: dict[str, Any], k: int) -> dict[str, Any]:
    kind, tl = config["speculators_model_type"], config["transformer_layer_config"]
    common = {"algo": kind, "num_layers": int(tl["num_hidden_layers"]), "intermediate_size": tl.get("intermediate_size")}
    vocab, dv = tl.get("vocab_size"), config.get("draft_vocab_size")
    if dv and vocab and dv < vocab:
        common["draft_vocab_size"] = int(dv)
    if kind == "eagle3":
        unsupported = [f for f in ("norm_before_residual", "norm_before_fc", "fc_norm", "norm_output") if config.get(f)]
        if unsupported:
            raise CheckpointError(f"this Eagle3 draft sets {', '.join(unsupported)}, which deepspec's Eagle3 does not compute",
                                  "evaluate it in vLLM; deepspec scores drafts with its own architecture")
        return {**common, "ttt_length": k}
    anchor = bool(config.get("sample_from_anchor", False))
    block = int(config.get("block_size") or (k if anchor else k + 1))
    section = {**common, "block_size": block if anchor else block - 1, "predict_from_anchor": anchor}
    if kind == "dflash":
        return section
    if kind == "dspark":
        rank = int(config.get("markov_rank") or 0)
        if (config.get("markov_head_type") or "vanilla") != "vanilla":
            raise CheckpointError(f"this DSpark draft's Markov head is {config['markov_head_type']!r}",
                                  "deepspec imports the vanilla head only")
        return {**section, "sequential_head": "markov" if rank else "none", "markov_rank": rank,
                "confidence_head": bool(config.get("enable_confidence_head", True))}
    raise CheckpointError(f"speculators_model_type {kind!r} has no deepspec algorithm",
                          "deepspec imports eagle3, dflash and dspark drafts")


def speculators_spec(path: Path, target: str | None = None) -> dict[str, Any]:
    """Spec data (target and draft sections) of a speculators-format directory."""
    config = json.loads((path / "config.json").read_text())
    sc = config["speculators_config"]
    k = int(sc["proposal_methods"][0]["speculative_tokens"])
    aux = config.get("eagle_aux_hidden_state_layer_ids") or config.get("aux_hidden_state_layer_ids")
    if not aux:
        raise CheckpointError(f"{path / 'config.json'} names no aux hidden-state layers",
                              "deepspec needs the captured layers (eagle_aux_hidden_state_layer_ids)")
    verifier = target or sc["verifier"]["name_or_path"]
    return {
        "target": {"model": verifier, "layer_ids": [i - 1 for i in aux],  # vLLM's ids are ours + 1
                   **({"mask_token_id": config["mask_token_id"]} if config.get("mask_token_id") is not None else {})},
        "draft": _draft_section(config, k),
        "eval": {"num_draft_tokens": k},
    }


def speculators_weights(path: Path, draft: Any) -> dict[str, torch.Tensor]:
    """The directory's tensors under our names for ``draft`` (a freshly built DraftModel).
    Raises CheckpointError naming tensors deepspec's draft has no place for."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} holds no *.safetensors", "is it a speculators-format draft directory?")
    theirs: dict[str, torch.Tensor] = {}
    for f in files:
        theirs.update(load_file(str(f)))
    ours = draft.trainable_state_dict()
    to_ours = {new: old for new, old in zip(rename(ours, draft.algo), ours, strict=True)}
    extra = sorted(n for n in theirs if n not in to_ours)
    if extra:
        raise CheckpointError(f"{path} has tensors deepspec's {draft.algo} draft has no place for: {extra[:4]}",
                              "it was trained with an architecture option deepspec does not implement")
    state = {to_ours[n]: t for n, t in theirs.items()}
    if "d2t" in state and "t2d" not in state:  # vLLM-only drafts may ship d2t alone
        t2d = torch.zeros(draft.vocab_size, dtype=torch.bool)
        t2d[torch.arange(state["d2t"].numel()) + state["d2t"]] = True
        state["t2d"] = t2d
    return state
