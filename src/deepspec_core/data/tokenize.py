"""Render conversations with the target's own chat template and build the assistant loss mask.

Regen, training and eval all render through :func:`render_chat`, so the draft trains on exactly
the text the target saw: the target's template, no injected system prompt, thinking mode explicit
(passed as ``enable_thinking``; templates without the switch ignore it).

The loss mask is found in the rendered text, not by re-rendering pieces: each assistant turn's
generated span (its content, plus its thinking block when the template renders one) is located
by character offsets, mapped onto tokens with the fast tokenizer's offset mapping, and the
end-of-turn special token that follows it is added. This works for templates that rewrite history
(Qwen3 drops earlier turns' reasoning), which prefix-diffing does not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepspec_core.data.conversations import read_conversations
from deepspec_core.errors import DataError


@dataclass
class TokenizedSample:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is a supervised assistant token
    num_loss_tokens: int  # after truncation
    num_assistant_tokens: int  # tokens of the assistant turns counted on their own (+1 end-of-turn each)
    truncated: bool
    thinking: bool
    full_loss_tokens: int = 0  # supervised tokens before truncation

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def coverage(self) -> float:
        """Supervised / assistant tokens before truncation; ~1.0 when the mask is right."""
        return self.full_loss_tokens / max(self.num_assistant_tokens, 1)


def template_messages(messages: list[dict[str, Any]], thinking: bool) -> list[dict[str, Any]]:
    """Our messages → what chat templates read: reasoning as ``reasoning_content`` (Qwen3) and
    ``thinking`` (others); dropped entirely when thinking is off, since the target never produced it."""
    out = []
    for m in messages:
        msg = {"role": m["role"], "content": m["content"]}
        if thinking and m.get("thinking"):
            msg["reasoning_content"] = m["thinking"]
            msg["thinking"] = m["thinking"]
        out.append(msg)
    return out


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], thinking: bool, add_generation_prompt: bool) -> str:
    """The chat template applied as text (tokenise it with ``add_special_tokens=False``)."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template",
            "set target.chat_template to a Jinja template file",
        )
    return tokenizer.apply_chat_template(
        template_messages(messages, thinking),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        enable_thinking=thinking,
    )


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], thinking: bool) -> str:
    """The prompt the target continues to write the next assistant turn (regen and eval)."""
    return render_chat(tokenizer, messages, thinking, add_generation_prompt=True)


def split_thinking(text: str) -> tuple[str, str | None]:
    """A generated answer → (content, thinking or None), splitting at a ``</think>`` tag."""
    if "</think>" not in text:
        return text.strip(), None
    think, _, content = text.partition("</think>")
    think = think.replace("<think>", "", 1).strip()
    return content.strip(), (think or None)


def _generation_header(tokenizer: Any, history: list[dict[str, Any]], thinking: bool) -> str:
    """What the template adds for the generation prompt after ``history`` (e.g. '<|im_start|>assistant\\n')."""
    with_prompt = render_chat(tokenizer, history, thinking, add_generation_prompt=True)
    without = render_chat(tokenizer, history, thinking, add_generation_prompt=False)
    return with_prompt[len(without):] if with_prompt.startswith(without) else ""


def assistant_char_spans(tokenizer: Any, messages: list[dict[str, Any]], text: str, thinking: bool) -> list[tuple[int, int]]:
    """Character spans of the generated part of each assistant turn in the rendered ``text``.

    A span starts after the template's generation header when that header is found right before
    the turn (so a rendered thinking block is included), else at the content; it ends at the end
    of the content. Messages are searched in order, so an answer that also occurs in a prompt is
    not matched inside the prompt. Raises DataError when the template dropped an answer.
    """
    spans = []
    cursor = 0
    for i, m in enumerate(messages):
        needle = m["content"].strip()
        if m["role"] != "assistant":
            pos = text.find(needle, cursor) if needle else -1
            cursor = pos + len(needle) if pos >= 0 else cursor
            continue
        pos = text.find(needle, cursor)
        if pos < 0:
            raise DataError(f"assistant turn {i} does not appear in the rendered chat template output",
                            "the template rewrites assistant content; set target.chat_template")
        start = pos
        header = _generation_header(tokenizer, messages[:i], thinking)
        if header:
            h = text.rfind(header, cursor, pos + 1)
            if h >= 0:
                start = h + len(header)
        spans.append((start, pos + len(needle)))
        cursor = pos + len(needle)
    return spans


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for tid, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(tid)
    return ids


def tokenize_conversation(tokenizer: Any, conversation: dict[str, Any], max_length: int, thinking: bool) -> TokenizedSample:
    """Render with the target's template, tokenise, mask assistant spans + end-of-turn, truncate."""
    messages = conversation["messages"]
    text = render_chat(tokenizer, messages, thinking, add_generation_prompt=False)
    spans = assistant_char_spans(tokenizer, messages, text, thinking)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    specials = _special_ids(tokenizer)
    mask = [0] * len(ids)
    t = 0
    for start, end in spans:
        while t < len(ids) and offsets[t][1] <= start and not (offsets[t][0] == offsets[t][1] == start):
            t += 1
        while t < len(ids) and offsets[t][0] < end:
            mask[t] = 1
            t += 1
        # The end-of-turn token (e.g. <|im_end|>, <|eot_id|>) is generated by the target: supervise it.
        if t < len(ids) and ids[t] in specials:
            mask[t] = 1
            t += 1
    # Independent count for the coverage check: each answer tokenised alone, +1 end-of-turn, plus
    # its reasoning where the template rendered it.
    expected = 0
    answers = [m for m in messages if m["role"] == "assistant"]
    for m, (start, end) in zip(answers, spans, strict=True):
        expected += len(tokenizer(m["content"].strip(), add_special_tokens=False)["input_ids"]) + 1
        think = (m.get("thinking") or "").strip()
        block = text[start : end - len(m["content"].strip())]  # the rendered thinking block, if any
        if thinking and think and think in block:
            expected += len(tokenizer(block, add_special_tokens=False)["input_ids"])
    full = sum(mask)
    truncated = len(ids) > max_length
    ids, mask = ids[:max_length], mask[:max_length]
    return TokenizedSample(
        input_ids=list(ids),
        loss_mask=mask,
        num_loss_tokens=sum(mask),
        num_assistant_tokens=expected,
        truncated=truncated,
        thinking=thinking,
        full_loss_tokens=full,
    )


@dataclass
class TokenizeStats:
    seen: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason → samples


def iter_tokenized(
    path: Path | str,
    tokenizer: Any,
    max_length: int,
    thinking: bool,
    min_loss_tokens: int = 1,
    stats: TokenizeStats | None = None,
    limit: int | None = None,
) -> Iterator[tuple[str, TokenizedSample]]:
    """(conversation id, sample) for each usable conversation of a JSONL file, in file order.

    Conversations without an assistant turn, whose answers the template drops, or with fewer than
    ``min_loss_tokens`` supervised tokens after truncation are skipped and counted in ``stats``.
    """
    stats = stats if stats is not None else TokenizeStats()
    for conv in read_conversations(path, limit=limit):
        stats.seen += 1
        if not any(m["role"] == "assistant" for m in conv["messages"]):
            stats.skipped["no assistant turn"] += 1
            continue
        try:
            sample = tokenize_conversation(tokenizer, conv, max_length, thinking)
        except DataError:
            stats.skipped["answer not in rendered template"] += 1
            continue
        if sample.num_loss_tokens < min_loss_tokens:
            stats.skipped["too few loss tokens"] += 1
            continue
        stats.kept += 1
        yield conv["id"], sample
