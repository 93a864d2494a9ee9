"""One assembly path from a spec to a runnable draft, shared by training, evaluation and export.

``assemble(spec, device, load_target=...)`` checks the spec against the target's config, then
gets the frozen embedding / lm_head — from the loaded target when the caller needs the target
anyway (online features, decoding), else straight from its safetensors — and builds the draft
(optionally with a checkpoint's trained weights). ``checkpoint_spec`` turns a checkpoint's
``config.json`` back into the spec sections it was trained with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepspec_core.errors import TargetError
from deepspec_core.spec import RunSpec, check_against_target, spec_from_dict


@dataclass
class Assembly:
    spec: RunSpec
    config: Any  # the target's transformers config
    target_path: str  # a local directory, or the hub id it resolves to
    draft: Any  # DraftModel, on the device asked for (its trainable parameters in their init dtype)
    target: Any = None  # targets.hf.Target when load_target was asked for, else None


def assemble(
    spec: RunSpec,
    device: torch.device | str,
    *,
    load_target: bool,
    weights_dir: Path | None = None,
    weights: Callable[[Any], dict[str, torch.Tensor]] | None = None,
) -> Assembly:
    """Target checks, frozen target tensors and the draft for ``spec`` on ``device``.

    ``weights_dir`` (a ``step_<N>`` directory) loads its trained weights into the draft; ``weights``
    (a function of the built draft: an imported draft's tensors under our names) likewise. Raises
    SpecError when the spec does not fit the target, TargetError when the target's weights cannot
    be read, CheckpointError when the weights do not fit the draft.
    """
    from deepspec_core.drafts import build_draft, frozen_weights_from_model, load_frozen_weights
    from deepspec_core.targets.hf import load_config, load_target_from_spec, resolve_dtype, resolve_model

    target_path = resolve_model(spec.target.model)
    # Checks that need the target's config, before data, weights or the run directory are touched.
    config = load_config(spec.target)
    check_against_target(spec, config)
    target = None
    if load_target:
        target = load_target_from_spec(spec.target, device=str(device))
        embed, head = frozen_weights_from_model(target.model)
        device = target.device
    else:
        if not isinstance(device, torch.device):  # "auto" without a loaded target: the CPU
            device = torch.device("cpu" if device == "auto" else device)
        embed, head = load_frozen_weights(
            local_weights_dir(target_path, spec.target.revision), dtype=resolve_dtype(spec.target.dtype, device)
        )
    draft = build_draft(spec, config, embed, head)
    if getattr(spec.draft, "init_layers", None) and weights_dir is None and weights is None:
        draft.init_from_target(local_weights_dir(target_path, spec.target.revision))  # a fresh draft only
    if weights_dir is not None:
        from deepspec_core.runs import load_weights

        draft.load_trainable_state_dict(load_weights(weights_dir))
    if weights is not None:
        draft.load_trainable_state_dict(weights(draft))
    draft.to(device)
    return Assembly(spec, config, target_path, draft, target)


def checkpoint_spec(step_dir: Path, base: RunSpec | None = None) -> RunSpec:
    """The spec a checkpoint rebuilds from: its ``config.json``'s target and draft sections over
    ``base`` (the run's spec, which carries the eval defaults) or the defaults."""
    from deepspec_core.runs import read_checkpoint_config

    config = read_checkpoint_config(step_dir)
    data = {} if base is None else base.model_dump(mode="json", exclude_none=True)
    data.update(target=config["target"], draft=config["draft"])
    return spec_from_dict(data, source=f"{step_dir / 'config.json'}")


def local_weights_dir(model: str, revision: str | None) -> str:
    """A hub id → its local snapshot (weights files only; usually already cached by the cache step)."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    from huggingface_hub import snapshot_download

    from deepspec_core.hub import hub_reachable

    try:
        return snapshot_download(model, revision=revision, allow_patterns=["*.safetensors", "*.json"],
                                 local_files_only=not hub_reachable())
    except Exception as err:  # offline, gated, typo: one clear line
        raise TargetError(
            f"cannot fetch the weights of target {model!r} for its frozen embedding / lm_head: {type(err).__name__}",
            "check network access, or download the model and point target.model at the directory",
        ) from err
