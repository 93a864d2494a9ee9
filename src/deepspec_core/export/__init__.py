"""``deepspec export``: a trained draft as a directory a serving engine loads unchanged.

``export_draft(checkpoint, fmt, out)`` rebuilds the draft from its checkpoint (the one assembly
path), maps it to the engine's format (:mod:`.speculators`), writes ``config.json`` and
``model.safetensors`` (bf16; ``d2t`` int64 offsets, ``t2d`` bool, the confidence head fp32, no frozen
target tensors) atomically, and checks what it wrote (:func:`verify_export`) before it returns.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deepspec_core.errors import ExportError
from deepspec_core.io import output_dir

from . import layouts
from .speculators import rename, sglang_export, sglang_rename, vllm_export

FORMATS = ("vllm", "sglang")
_KEEP_DTYPE = ("d2t", "t2d", "confidence_head.proj.weight", "confidence_head.proj.bias")


@dataclass
class Exported:
    out_dir: Path
    fmt: str
    algo: str  # deepspec's algorithm
    served_as: str  # the engine's draft type
    k: int  # tokens drafted per round at serving time
    tensors: dict[str, tuple[int, ...]]
    notes: list[str] = field(default_factory=list)
    launch: list[str] = field(default_factory=list)  # commands that serve it


def export_draft(checkpoint: str | Path, fmt: str, out: str | Path, k: int | None = None,
                 overwrite: bool = False) -> Exported:
    """Export a run directory's latest checkpoint (or a ``step_<N>`` directory) to ``out``.

    Raises ExportError for a format the draft cannot be served in (naming why), CheckpointError for
    an unreadable checkpoint, and ExportError when ``out`` holds other files (unless ``overwrite``).
    """
    from deepspec_core.assembly import assemble, checkpoint_spec
    from deepspec_core.runs import resolve_checkpoint

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}", f"choose one of: {', '.join(FORMATS)}")
    if k is not None and k < 1:
        raise ExportError(f"--k {k}: a round drafts at least one token", "pass --k 1 or more, or leave it unset")
    step, _ = resolve_checkpoint(checkpoint)
    out = _check_out(Path(out).expanduser(), step, overwrite)
    spec = checkpoint_spec(step)
    parts = assemble(spec, "cpu", load_target=False, weights_dir=step)
    build = vllm_export if fmt == "vllm" else sglang_export
    config, tensors, k, notes = build(parts.draft, spec, parts.config, _verifier_path(parts.target_path), k)
    tensors = {n: t.detach().to("cpu").contiguous() if n in _KEEP_DTYPE else t.detach().to("cpu", torch.bfloat16)
               .contiguous() for n, t in tensors.items()}
    config["torch_dtype"] = "bfloat16"
    _write(out, config, tensors, fmt, step)
    kind = config.get("speculators_model_type", config["architectures"][0])
    return Exported(out, fmt, spec.draft.algo, kind, k, {n: tuple(t.shape) for n, t in tensors.items()},
                    notes, launch_commands(fmt, out, config, parts.target_path, k))


def is_export(path: Path) -> bool:
    """A directory ``deepspec export`` (or another exporter) wrote: a draft config and weights only."""
    config = path / "config.json"
    if not config.is_file() or {p.name for p in path.iterdir()} - {"config.json", "model.safetensors"}:
        return False
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return "speculators_config" in data or layouts.is_sglang_config(data)


def _check_out(out: Path, step: Path, overwrite: bool) -> Path:
    """``--out``: a new or empty directory, or (with ``overwrite``) a previous export — never a file,
    a directory holding anything else, the checkpoint itself or a directory above it."""
    output_dir(out, "--out", ExportError)
    resolved, source = out.resolve(), step.resolve()
    if resolved == source or resolved in source.parents:
        raise ExportError(f"--out {out} holds the checkpoint being exported", "choose a directory outside the run")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} already holds files", "choose an empty --out directory, or pass --overwrite")
        if not is_export(out):
            raise ExportError(f"--overwrite replaces a previous export only, and {out} holds other files",
                              "choose an empty --out directory")
    return out


def _verifier_path(target_path: str) -> str:
    p = Path(target_path).expanduser()
    return str(p.resolve()) if p.is_dir() else target_path


def _write(out: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], fmt: str, step: Path) -> None:
    """Both files into a temporary directory beside ``out``, checked there (:func:`verify_export`),
    then renamed into place: a failed check leaves ``out`` as it was."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        verify_export(tmp, fmt, step)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the export from a server running as another user
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)  # empty, or a previous export (_check_out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def verify_export(out: str | Path, fmt: str, step_dir: str | Path) -> None:
    """Check an export against the engine's declared tensors (:mod:`.layouts`) and against the
    checkpoint it came from: the exact set of names and shapes, every tensor equal to its source
    (after the bf16 cast), aux layer ids, mask token and k. Raises ExportError listing each problem."""
    from safetensors.torch import load_file

    from deepspec_core.assembly import checkpoint_spec
    from deepspec_core.runs import load_weights, read_checkpoint_config

    out, step_dir = Path(out), Path(step_dir)
    config = json.loads((out / "config.json").read_text())
    tensors = load_file(str(out / "model.safetensors"))
    spec = checkpoint_spec(step_dir)
    vocab = int(read_checkpoint_config(step_dir)["vocab_size"])
    want = layouts.vllm_tensors(config, vocab) if fmt == "vllm" else layouts.sglang_tensors(config, vocab)
    got = {n: tuple(t.shape) for n, t in tensors.items()}
    problems = [f"missing {n} {s}" for n, s in want.items() if n not in got]
    problems += [f"unexpected {n}" for n in got if n not in want]
    problems += [f"{n} has shape {got[n]}, the engine's is {s}" for n, s in want.items() if n in got and got[n] != s]
    ids = list(spec.target.layer_ids)
    if fmt == "vllm":
        aux = config.get("eagle_aux_hidden_state_layer_ids") or config.get("aux_hidden_state_layer_ids")
        if aux != [i + 1 for i in ids]:
            problems.append(f"aux layer ids {aux} are not the trained layers {ids} + 1 (vLLM captures before layer j)")
    else:
        sg = (config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") or \
            (config.get("dflash_config") or {}).get("target_layer_ids")
        if sg != ids:
            problems.append(f"layer ids {sg} are not the trained layers {ids} (SGLang counts from 0)")
    mask = config.get("mask_token_id", (config.get("dflash_config") or {}).get("mask_token_id"))
    if spec.draft.max_k() is not None and mask != spec.target.mask_token_id:
        problems.append(f"mask_token_id {mask} is not the trained {spec.target.mask_token_id}")
    mapped = (rename if fmt == "vllm" else sglang_rename)(load_weights(step_dir), spec.draft.algo)
    for name, t in tensors.items():
        ref = mapped.get(name)
        if ref is not None and not torch.equal(t, ref.to(t.dtype)):
            problems.append(f"{name} differs from the checkpoint's tensor")
    if problems:
        raise ExportError(f"the export fails its own checks (nothing was kept): {'; '.join(problems[:6])}"
                          + (f" [+{len(problems) - 6} more]" if len(problems) > 6 else ""),
                          "this is a deepspec bug: please report it with the checkpoint's config.json")


def launch_commands(fmt: str, out: Path, config: dict[str, Any], target_path: str, k: int) -> list[str]:
    """How to serve the export. SGLang counts a DFlash round by its block (k drafts + the anchor),
    an Eagle3 round by its steps plus the verified root token."""
    if fmt == "vllm":
        return [f"vllm serve {out}",
                f"python -c \"from vllm import LLM; LLM(model='{out}')\"   # offline; the target comes from the config"]
    head = f"python -m sglang.launch_server --model-path {target_path} --speculative-draft-model-path {out}"
    if config["architectures"] == [layouts.SGLANG_EAGLE3]:
        return [f"{head} --speculative-algorithm EAGLE3 --speculative-num-steps {k} --speculative-eagle-topk 1 "
                f"--speculative-num-draft-tokens {k + 1}"]
    return [f"{head} --speculative-algorithm DFLASH --speculative-num-draft-tokens {config['block_size']}"]
