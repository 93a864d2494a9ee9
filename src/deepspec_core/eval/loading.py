"""Loading a trained draft for decoding, and the prompt / stop-token conventions of evaluation.

``load_draft`` rebuilds a checkpoint (spec from its ``config.json``, frozen embedding and head from
the target, trainable weights from ``model.safetensors``); ``eos_token_ids`` and ``encode_prompt`` are
shared by the benchmark runner and by calibration so both decode exactly alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deepspec_core.errors import CheckpointError

if TYPE_CHECKING:
    from deepspec_core.drafts import DraftModel

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


@dataclass
class LoadedDraft:
    draft: DraftModel  # eval mode, on the target's device
    target: Any  # targets.hf.Target
    spec: Any  # RunSpec: target + draft sections from the checkpoint, eval defaults from the run
    step_dir: Path  # the checkpoint, or the imported speculators-format directory
    run_dir: Path | None
    imported: bool = False  # read from a speculators-format directory


def load_draft(
    path: Path | str, target: str | None = None, device: str = "auto", draft_dtype: str = "auto"
) -> LoadedDraft:
    """Rebuild a trained draft through :func:`deepspec_core.assembly.assemble`: its spec from the
    checkpoint's ``config.json`` (over the run's spec, which carries the eval defaults), the target
    loaded for decoding, the trained weights. A speculators-format directory (``deepspec export``'s,
    or a public draft's) is read the same way through :mod:`deepspec_core.export.importer`.
    ``target`` overrides the spec's target model; the draft decodes in ``draft_dtype``
    (:func:`decode_draft_dtype`). On a CPU the fp32 linear layers of both models compute through
    oneDNN-packed weights (:func:`deepspec_core.decode.cpu_linear.pack_linears`), for target-only
    and speculative decoding alike, where the packed copies fit in half the memory available
    (:func:`deepspec_core.hardware.available_memory_bytes`)."""
    from deepspec_core.assembly import assemble, checkpoint_spec
    from deepspec_core.export.importer import is_speculators_dir, speculators_spec, speculators_weights
    from deepspec_core.runs import resolve_checkpoint
    from deepspec_core.spec import load_spec, spec_from_dict

    device = join_processes(device)
    p = Path(path).expanduser()
    imported = p.is_dir() and is_speculators_dir(p)
    if imported:
        step, run = p, None
        spec = spec_from_dict(speculators_spec(p, target), source=str(p / "config.json"))
        weights_dir, weights = None, (lambda draft: speculators_weights(p, draft))
        trained_for, target = spec.target.model, None
    else:
        step, run = resolve_checkpoint(p)
        spec = checkpoint_spec(step, base=load_spec(run / "spec.toml") if run is not None else None)
        weights_dir, weights = step, None
        trained_for = spec.target.model
    if target:
        spec = spec.model_copy(
            update={"target": spec.target.model_copy(update={"model": target, "revision": None})}
        )
    try:
        parts = assemble(spec, device, load_target=True, weights_dir=weights_dir, weights=weights)
    except CheckpointError as err:
        if not target:
            raise
        raise CheckpointError(
            f"draft {step} was trained for target {trained_for}, not --target {target}: {err.message}",
            "evaluate it with its own target (drop --target), or with one of the same sizes",
        ) from None
    tgt = parts.target
    draft = parts.draft.to(dtype=decode_draft_dtype(draft_dtype, tgt.dtype, tgt.device)).eval()  # under no_grad
    if tgt.device.type == "cpu":
        from deepspec_core.decode.cpu_linear import pack_linears
        from deepspec_core.hardware import available_memory_bytes

        free = available_memory_bytes()
        pack_linears(tgt.model, draft, max_bytes=None if free is None else free // 2)
    return LoadedDraft(draft, tgt, spec, step, run, imported)


def decode_draft_dtype(name: str, target_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the draft decodes in: ``name`` (bfloat16 / float16 / float32), or for "auto" the
    target's dtype, except bf16 beside an fp32 target on a CPU.

    On a CPU a draft's products have few rows (one per token for Eagle3, a block for DFlash /
    DSpark) and are bound by reading the weights, so bf16 pays even where the CPU converts it to
    fp32 to multiply (docs/hardware.md): measured on SmolLM2-135M, 2 AVX2-only cores, Eagle3's five
    proposal steps went from 0.29 to 0.18 target steps, DFlash's and DSpark's rounds from 1.45 / 1.46
    to 1.42 / 1.43 (separate runs). The draft's precision cannot change what is committed (the target verifies
    every token, and at T > 0 the rejection rule uses the fp32 distribution the draft actually
    sampled from), only which tokens are proposed; the target keeps its own dtype because a bf16
    target's k + 1-row verification does not round like its 1-row steps, so greedy output would
    drift from target-only decoding. Raises TargetError for an unknown name."""
    from deepspec_core.targets.hf import resolve_dtype

    if name != "auto":
        return resolve_dtype(name, device)
    if device.type == "cpu" and target_dtype == torch.float32:
        return torch.bfloat16
    return target_dtype


def join_processes(device: str) -> str:
    """Under torchrun / SLURM (one process per GPU, each decoding every world_size-th prompt): join
    the process group and return this process's device; else ``device`` unchanged."""
    from deepspec_core.distributed import detect_env, init_distributed, pick_device

    env = detect_env()
    if not env.distributed:
        return device
    dev = pick_device(env, device)
    init_distributed(env, dev)
    return str(dev)


def default_out_dir(loaded: LoadedDraft) -> Path:
    """<run>/eval/<step>/; beside an imported export (never inside what is served): <export>-eval/."""
    if loaded.imported:
        return loaded.step_dir.parent / f"{loaded.step_dir.name}-eval"
    base = loaded.run_dir if loaded.run_dir is not None else loaded.step_dir
    return base / "eval" / loaded.step_dir.name


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS of the generation config and the tokenizer, plus the template's end-of-turn token."""
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return sorted(ids)


def encode_prompt(
    tokenizer: Any, messages: list[dict[str, str]], thinking: bool, device: torch.device
) -> torch.Tensor:
    """The first-turn prompt as the evaluation feeds it: chat template, generation prompt on → (1, n) ids."""
    from deepspec_core.data.tokenize import render_prompt

    text = render_prompt(tokenizer, messages, thinking)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids], dtype=torch.long, device=device)
