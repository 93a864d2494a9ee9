"""`deepspec target import`: turn a GGUF file or an HF directory into a standard HF target directory.

GGUF weights are dequantised by transformers (through the optional ``gguf`` package). A model
loaded that way carries a quantisation config and refuses ``save_pretrained``, so the weights are
copied into a fresh model built from the same config without it, then saved as safetensors.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from deepspec_core.errors import TargetError
from deepspec_core.io import output_dir

# GGUF architectures whose transformers classes expose `model.layers` and `model.norm`, i.e. what
# the capture function and the drafts support.
SUPPORTED_GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "stablelm", "starcoder2")
_FLOAT_TYPES = ("F32", "F16", "BF16")
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class ImportResult:
    out_dir: Path
    architecture: str
    num_parameters: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    quantization: list[str]
    has_chat_template: bool
    seconds: float


def _gguf_reader(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError as err:
        raise TargetError(
            "reading GGUF files needs the optional 'gguf' package", "pip install 'deepspec[gguf]'"
        ) from err
    try:
        return GGUFReader(str(path))
    except (ValueError, OSError) as err:
        raise TargetError(f"{path} is not a readable GGUF file: {err}") from err


def _quant_types() -> set[str]:
    import gguf.quants

    # gguf dequantises the types that have numpy traits; floats need no traits.
    traits = getattr(gguf.quants, "_type_traits", {})
    return {getattr(t, "name", str(t)) for t in traits} | set(_FLOAT_TYPES)


def inspect_gguf(path: Path) -> tuple[str, list[str]]:
    """Architecture and tensor quantisation types of a GGUF file; raises when unsupported."""
    reader = _gguf_reader(path)
    field = reader.fields.get("general.architecture")
    if field is None:
        raise TargetError(f"{path} has no general.architecture field", "is it a model GGUF file?")
    arch = field.contents()
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise TargetError(
            f"GGUF architecture {arch!r} of {path.name} is not supported",
            f"supported: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)}",
        )
    types = sorted({t.tensor_type.name for t in reader.tensors})
    unknown = [t for t in types if t not in _quant_types()]
    if unknown:
        raise TargetError(
            f"{path.name} uses quantisation types {unknown} that cannot be dequantised here",
            "re-export the model as F16/BF16/Q8_0/Q4_K or upgrade the gguf package",
        )
    return arch, types


def _find_gguf(source: Path, gguf_file: str | None) -> Path:
    if source.is_file():
        return source
    if gguf_file:
        path = source / gguf_file
        if not path.is_file():
            raise TargetError(f"--gguf-file {gguf_file} is not in {source}")
        return path
    found = sorted(source.glob("*.gguf"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found)
        raise TargetError(
            f"{source} holds {len(found)} GGUF files ({names})" if found else f"{source} holds no .gguf file",
            "name one with --gguf-file" if found else "pass a .gguf file or an HF model directory",
        )
    return found[0]


def import_target(source: str | Path, out_dir: str | Path, gguf_file: str | None = None, dtype: str = "bfloat16") -> ImportResult:
    """Write a standard HF directory (config, safetensors, tokenizer, chat template) to ``out_dir``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    src = Path(source).expanduser()
    out = output_dir(out_dir, "--out", TargetError)
    if dtype not in _DTYPES:
        raise TargetError(f"--dtype {dtype!r} is not supported", f"choose one of: {', '.join(_DTYPES)}")
    if not src.exists():
        raise TargetError(f"{src} does not exist", "pass a .gguf file or an HF model directory")
    if out.exists() and any(out.iterdir()):
        raise TargetError(f"output directory {out} is not empty", "choose a new --out directory")

    is_hf_dir = src.is_dir() and (src / "config.json").is_file() and not gguf_file
    if is_hf_dir:
        quant: list[str] = []
        arch = json.loads((src / "config.json").read_text()).get("model_type", "?")
        model = AutoModelForCausalLM.from_pretrained(src, dtype=_DTYPES[dtype])
        tokenizer = AutoTokenizer.from_pretrained(src)
    else:
        path = _find_gguf(src, gguf_file)
        arch, quant = inspect_gguf(path)
        kw = {"gguf_file": path.name}
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, **kw)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
        config = AutoConfig.from_pretrained(path.parent, **kw)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=_DTYPES[dtype])
        model.load_state_dict(loaded.state_dict())
        del loaded
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg = model.config
    return ImportResult(
        out_dir=out,
        architecture=arch,
        num_parameters=sum(p.numel() for p in model.parameters()),
        num_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
        vocab_size=cfg.vocab_size,
        quantization=quant,
        has_chat_template=bool(tokenizer.chat_template),
        seconds=time.perf_counter() - start,
    )
