"""Corpus and tokenizer of the embedded tiny target.

Everything comes from text present on every machine that runs Python: the standard library's own
source. Chat pairs are derived from it with ``ast`` (a function's docstring is the question, its
source the answer), so the tiny target learns a chat format without downloading anything.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

from deepspec_core.errors import TargetError

ENDOFTEXT, IM_START, IM_END, THINK, END_THINK, MASK = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<|mask|>",
)
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, THINK, END_THINK, MASK]

# Directories skipped: tests (huge, repetitive), third-party packages (differ per machine, which
# would break reproducibility) and generated tables that are not code anyone writes.
_SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "encodings",
    "pydoc_data",
}

# Qwen3-style template. The last assistant turn after the last user message always carries a
# <think> block (empty when there is no thinking), so a rendered conversation equals the generation
# prompt with thinking off plus the answer: the assistant span is plain text after that prompt.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set thinking = m.thinking if m.thinking is defined and m.thinking else "
    "(m.reasoning_content if m.reasoning_content is defined and m.reasoning_content else '') -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if loop.index0 > ns.last_user -%}"
    "{{- '<think>\\n' + (thinking | trim) + '\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{{- m.content + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

# Pre-tokenizer split: keeps runs of newlines whole (so "\n\n" tokenizes the same at the end of a
# prompt and before an answer) and groups indentation, which matters for code.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SYSTEM_PROMPT = "You are a helpful assistant that writes Python code."


@dataclass(frozen=True)
class SourceFile:
    relpath: str  # posix path relative to the stdlib root; stable across machines
    text: str


def stdlib_root() -> Path:
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise TargetError(
            f"Python standard library not found at {root}",
            hint="the tiny target is built from the stdlib source; use a Python with its .py files installed",
        )
    return root


def stdlib_files(root: Path | None = None) -> list[Path]:
    """All stdlib ``.py`` files in a fixed (sorted) order."""
    root = root or stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Prune in place so site-packages (possibly huge) is never walked.
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        out += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def corpus_fingerprint(files: list[Path], root: Path) -> str:
    """Cheap identity of the corpus (names + sizes); a different Python gives a different target."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def read_sources(files: list[Path], root: Path, max_bytes: int | None = None) -> list[SourceFile]:
    out, total = [], 0
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(SourceFile(p.relative_to(root).as_posix(), text))
        total += len(text)
        if max_bytes is not None and total >= max_bytes:
            break
    return out


def is_heldout(relpath: str, every: int = 20) -> bool:
    """Deterministic file-level split: about 1 in ``every`` files is held out for perplexity."""
    return int(hashlib.sha256(relpath.encode()).hexdigest()[:8], 16) % every == 0


def _stable_int(s: str) -> int:
    return int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)


def chat_pairs(src: SourceFile, max_answer_chars: int = 1500) -> list[dict]:
    """Docstring → function conversations from one source file, in source order."""
    try:
        tree = ast.parse(src.text)
    except (SyntaxError, ValueError):
        return []
    lines = src.text.splitlines()
    module = src.relpath.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    convs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc or node.end_lineno is None:
            continue
        doc = doc.split("\n\n")[0].strip()[:400]
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        answer = textwrap.dedent("\n".join(lines[start - 1 : node.end_lineno])).strip("\n")
        if len(answer) > max_answer_chars or len(doc) < 10:
            continue
        convs.append(_conversation(module, node, doc, answer))
    return convs


def _conversation(module: str, node: ast.FunctionDef | ast.AsyncFunctionDef, doc: str, answer: str) -> dict:
    # Vary the prompt shape, the system turn and the thinking field by a hash of the name, so the
    # model sees every part of the template while the corpus stays deterministic.
    v = _stable_int(f"{module}.{node.name}:{node.lineno}")
    args = ", ".join(a.arg for a in node.args.args)
    user = [
        doc,
        f"Write a Python function `{node.name}`: {doc}",
        f"Implement `{node.name}({args})` from the `{module}` module.\n\n{doc}",
    ][v % 3]
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if v % 4 == 0 else []
    messages.append({"role": "user", "content": user})
    reply: dict = {"role": "assistant", "content": answer}
    if v % 5 == 0:
        reply["thinking"] = f"The function is `{node.name}` in `{module}`; it takes ({args})."
    messages.append(reply)
    return {"id": f"{module}:{node.name}:{node.lineno}", "messages": messages}


def train_bpe(texts: list[str], vocab_size: int):
    """Byte-level BPE with the chat special tokens at ids 0..5; returns a ``tokenizers.Tokenizer``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Like Qwen3, the thinking markers are plain added tokens: decoding with
    # skip_special_tokens=True keeps them, so a reasoning trace stays readable.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK, END_THINK)])
    return tok


def wrap_tokenizer(tok, model_max_length: int):
    """The trained BPE as a transformers fast tokenizer with Qwen3's special-token roles."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        mask_token=MASK,
        additional_special_tokens=[IM_START, IM_END, MASK],
        model_max_length=model_max_length,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
