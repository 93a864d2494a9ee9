"""The embedded tiny target: a small Qwen3 and its tokenizer, built from the Python stdlib source.

It exists so that every stage of deepspec (data, cache, train, eval) runs offline on a laptop CPU
and in tests. ``ensure_tiny_target`` builds once per recipe and caches under
``$DEEPSPEC_HOME/targets/tiny-<size>-<key>``; ``build_tiny_target`` builds into any directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepspec_core import paths
from deepspec_core.errors import TargetError
from deepspec_core.hardware import cpu_has_fast_bf16
from deepspec_core.io import output_dir
from deepspec_core.progress import Progress, as_progress
from deepspec_core.targets import tiny_data as td

# Bump when anything that changes the built weights changes (corpus, template, training).
RECIPE_VERSION = 1
INFO_FILE = "deepspec_tiny.json"
TINY_NAMES = {"tiny": "default", "tiny-quick": "quick"}


@dataclass(frozen=True)
class TinyRecipe:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    warmup_steps: int
    heldout_chats: int  # conversations scored for the chat perplexity
    heldout_blocks: int  # seq_len blocks of held-out source scored for the code perplexity
    max_corpus_chars: int | None = None  # read only the first N characters of the sorted stdlib
    # Torch threads while training (None: one per core). Part of the recipe because the thread
    # count changes float reductions, hence the weights.
    threads: int | None = None


SIZES: dict[str, TinyRecipe] = {
    # docs/reference.md (toolchain facts) recipe, sized to build in ~4 min on 2 cores with bf16 autocast.
    "default": TinyRecipe(256, 4, 4, 2, 64, 768, 4096, 256, 16, 400, 3e-3, 30, 64, 32),
    # For tests: same shape family (4 layers so three can be captured), seconds to build.
    # One thread: its small matmuls gain little from more, and a single thread is immune to the
    # oversubscription slowdown when test processes build it side by side.
    "quick": TinyRecipe(128, 4, 2, 1, 64, 384, 2048, 128, 16, 120, 3e-3, 12, 16, 8, 3_000_000, threads=1),
}


def _recipe(size: str) -> TinyRecipe:
    if size not in SIZES:
        raise TargetError(f"unknown tiny target size {size!r}", hint=f"choose one of: {', '.join(SIZES)}")
    return SIZES[size]


def _usable_cores() -> int:
    # Cores this process may run on (taskset / container limits), not the machine's total:
    # more threads than cores makes every parallel region wait for descheduled threads.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def build_key(size: str, seed: int) -> tuple[str, dict[str, Any]]:
    """Hash of everything that determines the build; names its cache directory."""
    root = td.stdlib_root()
    params = {
        "recipe_version": RECIPE_VERSION,
        "size": size,
        "seed": seed,
        "recipe": asdict(_recipe(size)),
        "python": platform.python_version(),
        "corpus": td.corpus_fingerprint(td.stdlib_files(root), root),
        "bf16_autocast": cpu_has_fast_bf16(),
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return key, params


def qwen3_config(r: TinyRecipe, tokenizer):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=r.vocab_size,
        hidden_size=r.hidden_size,
        num_hidden_layers=r.num_layers,
        num_attention_heads=r.num_heads,
        num_key_value_heads=r.num_kv_heads,
        head_dim=r.head_dim,
        intermediate_size=r.intermediate_size,
        max_position_embeddings=2048,
        # transformers 5 takes the legacy rope_theta through **kwargs (into rope_parameters), which its
        # dataclass signature does not show; 4.x has no rope_parameters.
        rope_theta=10000.0,  # type: ignore[call-arg]
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# ---------------------------------------------------------------- data


@dataclass
class _Corpus:
    tokenizer: Any
    train_blocks: Any  # (N, seq_len) int64, chat and code blocks already shuffled
    heldout_code: Any  # (M, seq_len) int64
    heldout_chats: list[dict]
    num_pairs: int


def _token_stream(tokenizer, texts: list[str]) -> list[int]:
    eot = tokenizer.pad_token_id
    out: list[int] = []
    # The backend directly: no max-length warning for whole files, and it batches in Rust.
    for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        out += enc.ids + [eot]
    return out


def _blocks(stream: list[int], seq_len: int):
    import torch

    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def _build_corpus(r: TinyRecipe, seed: int) -> _Corpus:
    import torch

    root = td.stdlib_root()
    sources = td.read_sources(td.stdlib_files(root), root, r.max_corpus_chars)
    train_src = [s for s in sources if not td.is_heldout(s.relpath)]
    held_src = [s for s in sources if td.is_heldout(s.relpath)]
    train_chats = [c for s in train_src for c in td.chat_pairs(s)]
    held_chats = [c for s in held_src for c in td.chat_pairs(s)]
    if not train_chats or not held_src:
        raise TargetError(f"the stdlib at {root} has too little source to build the tiny target")

    # Train the BPE on what the model will read: code and rendered chats (so "assistant" etc. merge).
    from jinja2 import Template

    render = Template(td.CHAT_TEMPLATE).render
    chat_texts = [render(messages=c["messages"], add_generation_prompt=False) for c in train_chats]
    code_texts = [s.text for s in train_src]
    tokenizer = td.wrap_tokenizer(td.train_bpe(code_texts + chat_texts, r.vocab_size), model_max_length=2048)
    if len(tokenizer) != r.vocab_size:
        raise TargetError(f"tiny tokenizer has {len(tokenizer)} tokens, expected {r.vocab_size}")

    # Half the blocks are chat, half raw code; a seeded permutation fixes the order.
    need = r.steps * r.batch_size
    chat = _blocks(_token_stream(tokenizer, chat_texts), r.seq_len)
    code = _blocks(_token_stream(tokenizer, code_texts), r.seq_len)
    g = torch.Generator().manual_seed(seed)
    chat = chat[torch.randperm(len(chat), generator=g)]
    code = code[torch.randperm(len(code), generator=g)]
    n_chat = min(len(chat), need // 2)
    n_code = min(len(code), need - n_chat)
    mix = torch.cat([chat[:n_chat], code[:n_code]])
    mix = mix[torch.randperm(len(mix), generator=g)]
    if len(mix) < need:  # small corpora repeat (same order every build)
        mix = mix.repeat(math.ceil(need / len(mix)), 1)[:need]

    held_code = _blocks(_token_stream(tokenizer, [s.text for s in held_src]), r.seq_len)[: r.heldout_blocks]
    # Thinking-free held-out chats, so prompt + answer renders exactly as the template's prefix.
    held = [
        {**c, "messages": [{k: v for k, v in m.items() if k != "thinking"} for m in c["messages"]]}
        for c in held_chats[: r.heldout_chats]
    ]
    return _Corpus(tokenizer, mix, held_code, held, len(train_chats) + len(held_chats))


# ---------------------------------------------------------------- training


def _lr_at(step: int, r: TinyRecipe) -> float:
    if step < r.warmup_steps:
        return r.lr * (step + 1) / r.warmup_steps
    frac = (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps)
    return r.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _train(model, blocks, r: TinyRecipe, bf16: bool, progress: Progress) -> list[float]:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, betas=(0.9, 0.95), weight_decay=0.1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    with progress.stage("tiny target", total=r.steps, unit="steps") as stage:
        for step in range(r.steps):
            x = blocks[step * r.batch_size : (step + 1) * r.batch_size]  # (B, T)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, r)
            with autocast:
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tok_s = (step + 1) * x.numel() / (time.perf_counter() - t0)
            stage.advance(1, loss=losses[-1], tok_s=tok_s)
    model.eval()
    return losses


@dataclass
class _Perplexity:
    chat: float
    chat_tokens: int
    code: float
    code_tokens: int


def _perplexity(model, tokenizer, corpus: _Corpus) -> _Perplexity:
    """Held-out perplexity on assistant tokens (answer + <|im_end|>) and on raw source blocks."""
    import torch
    import torch.nn.functional as F

    nll, count = 0.0, 0
    with torch.no_grad():
        for conv in corpus.heldout_chats:
            msgs = conv["messages"]
            full = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)
            prompt = tokenizer.apply_chat_template(
                msgs[:-1], tokenize=True, return_dict=False, add_generation_prompt=True, enable_thinking=False
            )
            if full[: len(prompt)] != prompt:
                continue  # tokenization across the boundary differs; scoring it would be unfair
            ids = torch.tensor([full[:-1]])  # drop the newline after <|im_end|>
            logits = model(input_ids=ids).logits[0, :-1].float()  # (T-1, V)
            tgt = ids[0, 1:]
            start = len(prompt) - 1  # the first answer token is predicted at the last prompt position
            nll += F.cross_entropy(logits[start:], tgt[start:], reduction="sum").item()
            count += len(tgt) - start
        code = corpus.heldout_code
        logits = model(input_ids=code).logits[:, :-1].float()  # (M, T-1, V)
        code_nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), code[:, 1:].reshape(-1)).item()
    return _Perplexity(
        chat=math.exp(nll / max(1, count)),
        chat_tokens=count,
        code=math.exp(code_nll),
        code_tokens=code[:, 1:].numel(),
    )


# ---------------------------------------------------------------- build and cache


def build_tiny_target(
    out_dir: Path | str, size: str = "default", seed: int = 0, progress: Progress | bool | None = None
) -> Path:
    """Build the tiny target (tokenizer + Qwen3) into ``out_dir``; deterministic for a seed.
    ``progress`` gets its training as a stage (:mod:`deepspec_core.progress`)."""
    import torch
    from transformers import GenerationConfig, Qwen3ForCausalLM

    r = _recipe(size)
    out = output_dir(out_dir, "--out", TargetError)
    if out.exists() and any(out.iterdir()) and not (out / INFO_FILE).exists():
        raise TargetError(
            f"{out} is not empty and is not a tiny target build",
            hint="pass an empty or new directory to --out",
        )
    t0 = time.perf_counter()
    key, params = build_key(size, seed)
    threads = r.threads or _usable_cores()
    bf16 = params["bf16_autocast"]

    corpus = _build_corpus(r, seed)
    tokenizer = corpus.tokenizer
    t_data = time.perf_counter() - t0

    # Fixed thread count and a private RNG stream: the same seed gives the same weights, and the
    # caller's thread setting and global RNG are left as they were.
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = Qwen3ForCausalLM(qwen3_config(r, tokenizer))
            losses = _train(model, corpus.train_blocks, r, bf16, as_progress(progress))
            t_train = time.perf_counter() - t0 - t_data
            ppl = _perplexity(model, tokenizer, corpus)
    finally:
        torch.set_num_threads(prev_threads)

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / INFO_FILE).unlink(missing_ok=True)  # the info file marks a complete build; write it last
    _save_quietly(model, tokenizer, out)
    info = {
        "name": f"tiny-{size}" if size != "default" else "tiny",
        "key": key,
        "build": params,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "special_tokens": {t: tokenizer.convert_tokens_to_ids(t) for t in td.SPECIAL_TOKENS},
        "chat_pairs": corpus.num_pairs,
        "train_tokens": r.steps * r.batch_size * r.seq_len,
        "torch_threads": threads,
        "final_train_loss": sum(losses[-10:]) / len(losses[-10:]),
        "heldout_perplexity": {"chat_assistant": ppl.chat, "code": ppl.code},
        "heldout_tokens": {"chat_assistant": ppl.chat_tokens, "code": ppl.code_tokens},
        "seconds": {
            "data_and_tokenizer": round(t_data, 2),
            "train": round(t_train, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
    }
    from deepspec_core.io import atomic_write_json

    atomic_write_json(out / INFO_FILE, info)
    return out


def _save_quietly(model, tokenizer, out: Path) -> None:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-shard bar for one small file is noise
    try:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def read_info(target_dir: Path | str) -> dict:
    return json.loads((Path(target_dir) / INFO_FILE).read_text())


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished build into place; when another process won the race, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / INFO_FILE).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_tiny_target(size: str = "default", seed: int = 0, progress: Progress | bool | None = None) -> Path:
    """The cached build of the tiny target for (size, seed); built on first use."""
    key, _ = build_key(size, seed)
    final = paths.targets_dir() / f"tiny-{size}-{key}"
    if (final / INFO_FILE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(final.parent / f".{final.name}.lock"):
        if (final / INFO_FILE).exists():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            build_tiny_target(tmp, size=size, seed=seed, progress=progress)
            return _publish(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Serialise builds of one target across processes, so a racing process waits instead of
    building twice. Where ``fcntl`` is missing, the atomic rename in ``_publish`` still keeps the
    cache consistent."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def resolve_tiny(name: str) -> Path | None:
    """Directory of the tiny target called ``name`` ("tiny", "tiny-quick"), or None for other names."""
    size = TINY_NAMES.get(name)
    return ensure_tiny_target(size) if size else None
