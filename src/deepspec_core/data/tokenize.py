"""Render conversations with the target's own chat template and build the assistant loss mask.

Regen, training and eval all render through :func:`render_chat`, so the draft trains on exactly
the text the target saw: the target's template, no injected system prompt, thinking mode explicit
(passed as ``enable_thinking``; templates without the switch ignore it).

The loss mask comes from the template's structure, never from searching the text for an answer
(an answer that repeats a prompt, a template word such as "assistant", or its own reasoning would
be found in the wrong place). For each message, the characters the template rendered from its
content (and, for an assistant turn, its reasoning) are located by rendering the conversation a
second time with that field replaced by a sentinel that occurs nowhere else and diffing the two
renders. An assistant turn's generated span then starts right after the template's generation
header (what ``add_generation_prompt`` appends: ``<|im_start|>assistant\n`` — with the empty
think block when thinking is off) when that header ends the template text before the turn, else
where its first rendered field starts; it ends with the end-of-turn special token that follows
the content (left out for an answer cut by ``max_tokens``, which the target never ended). This
works for templates that rewrite history (Qwen3 drops the reasoning of turns before the last user
query) and ones that trim content (Llama 3).

The text is then tokenised piece by piece — template text, supervised span, template text, … —
so the supervised tokens are exactly those of the span (the tokens the target generated after the
prompt, as at inference), never a token merged across the boundary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepspec_core.data.conversations import read_conversations
from deepspec_core.errors import DataError

# Bumped whenever the ids or masks of a conversation change; caches record it and a run refuses a
# cache made another way. 2: masks from the template's structure, piecewise tokenisation.
LOSS_MASK_VERSION = 2

# Private-use characters: no tokenizer-independent text a user brings is expected to hold them,
# and the renders are checked to be sure.
_SENTINEL_OPEN, _SENTINEL_CLOSE = "\ue000", "\ue001"


class MaskError(DataError):
    """A conversation whose loss mask cannot be built; ``reason`` is the countable skip label."""

    def __init__(self, reason: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.reason = reason


@dataclass
class TokenizedSample:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is a supervised assistant token
    num_loss_tokens: int  # after truncation
    num_assistant_tokens: int  # independent count: each answer (and rendered reasoning) tokenised alone, +1 end-of-turn
    truncated: bool
    thinking: bool
    full_loss_tokens: int = 0  # supervised tokens before truncation
    spans: list[str] = field(default_factory=list)  # the supervised text of each assistant turn, in order
    turns: int = 0  # assistant turns supervised
    edge_whitespace_tokens: int = 0  # of the answers' leading/trailing whitespace, which templates may trim

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def coverage(self) -> float:
        """Supervised / assistant tokens before truncation; ~1.0 when the mask is right."""
        return self.full_loss_tokens / max(self.num_assistant_tokens, 1)

    def supervised_texts(self, tokenizer: Any) -> list[str]:
        """The decoded text of each run of supervised tokens, in order (what the draft learns)."""
        runs: list[list[int]] = [[]]
        for tid, m in zip(self.input_ids, self.loss_mask, strict=True):
            if m:
                runs[-1].append(tid)
            elif runs[-1]:
                runs.append([])
        return [tokenizer.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in runs if r]

    def mask_problem(self) -> str | None:
        """Why the mask does not match the answers' independent token count, or None when it does.

        Allowed: two tokens per turn and 2% (a template that trims an answer's whitespace, tokens
        that merge differently inside the span than alone).
        """
        slack = 2 * self.turns + 0.02 * self.num_assistant_tokens
        low = self.num_assistant_tokens - self.edge_whitespace_tokens - slack
        if low <= self.full_loss_tokens <= self.num_assistant_tokens + slack:
            return None
        return (f"loss mask covers {self.full_loss_tokens} tokens where the answers have "
                f"{self.num_assistant_tokens} (coverage {self.coverage:.2f})")


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
    return render_chat_messages(tokenizer, template_messages(messages, thinking), thinking, add_generation_prompt)


def render_chat_messages(
    tokenizer: Any, tm: list[dict[str, Any]], thinking: bool, add_generation_prompt: bool
) -> str:
    """:func:`render_chat` of messages already in the template's layout (:func:`template_messages`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template",
            "set target.chat_template to a Jinja template file",
        )
    return tokenizer.apply_chat_template(
        tm, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=thinking
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


def _field_region(
    tokenizer: Any, tm: list[dict[str, Any]], i: int, keys: tuple[str, ...], text: str, thinking: bool
) -> tuple[int, int] | None:
    """Characters of ``text`` (the full render of the template messages ``tm``) rendered from
    ``tm[i][key]`` for ``keys``; None when the template renders none of them. Found by rendering
    again with the field replaced by a sentinel: the two renders agree before and after it.

    Raises DataError when the template renders the field more than once or rewrites it in a way
    that depends on its value (the region cannot then be told apart).
    """
    sentinel = f"{_SENTINEL_OPEN}{i}{_SENTINEL_CLOSE}"
    swapped = [dict(m) for m in tm]
    for key in keys:
        swapped[i][key] = sentinel
    other = render_chat_messages(tokenizer, swapped, thinking, add_generation_prompt=False)
    if other == text:
        return None
    limit = min(len(text), len(other))
    p = 0
    while p < limit and text[p] == other[p]:
        p += 1
    q = 0
    while q < limit - p and text[-1 - q] == other[-1 - q]:
        q += 1
    if other.count(sentinel) != 1 or other[p : len(other) - q] != sentinel:
        raise MaskError(
            "template rewrites a turn",
            f"the chat template renders the {keys[0]} of message {i} ({tm[i]['role']}) more than once or "
            "rewrites it, so its tokens cannot be located",
            "set target.chat_template to a template that renders each message once",
        )
    return p, len(text) - q


def _special_texts(tokenizer: Any) -> list[str]:
    """Texts of the tokenizer's special tokens, longest first (an end-of-turn token is one of them)."""
    texts = set(tokenizer.all_special_tokens)
    for tok in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(tok, "special", False):
            texts.add(str(tok))
    return sorted((t for t in texts if t), key=len, reverse=True)


@dataclass
class AssistantSpan:
    start: int  # first character the target generated (after the generation header)
    content: tuple[int, int]  # the rendered content
    reasoning: tuple[int, int] | None  # the rendered reasoning, when the template renders it
    end: int  # end of the supervised text: the content's end, or after the end-of-turn token

    def template_pieces(self, text: str) -> list[str]:
        """Supervised text the template wrote around the fields (e.g. '<think>\\n', the end-of-turn token)."""
        first = self.reasoning or self.content
        pieces = [text[self.start : first[0]]]
        if self.reasoning and self.end > self.reasoning[1]:
            pieces.append(text[self.reasoning[1] : min(self.content[0], self.end)])
        return [*pieces, text[self.content[1] : self.end]]


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, Any]], text: str, thinking: bool, cut_turns: frozenset[int] = frozenset()
) -> list[AssistantSpan]:
    """The supervised character span of every assistant turn of the rendered ``text``, in order.

    ``cut_turns`` holds the indices (among assistant turns) of answers cut by ``max_tokens``: their
    end-of-turn token is not supervised. Raises DataError when the template drops an answer.
    """
    if _SENTINEL_OPEN in text or _SENTINEL_CLOSE in text:
        raise MaskError("private-use characters in the text", "the conversation contains private-use characters "
                        "U+E000/U+E001", "remove them from the data: deepspec uses them to locate turns in the template")
    specials = _special_texts(tokenizer)
    tm = template_messages(messages, thinking)
    spans: list[AssistantSpan] = []
    prev_end = 0  # end of the previous message's rendered fields: a header is never searched before it
    for i, m in enumerate(tm):
        content = _field_region(tokenizer, tm, i, ("content",), text, thinking)
        if m["role"] != "assistant":
            prev_end = content[1] if content is not None else prev_end
            continue
        if content is None:
            raise MaskError("answer not rendered by the chat template",
                            f"assistant turn {i} does not appear in the rendered chat template output",
                            "the template drops assistant content; set target.chat_template")
        # Templates read reasoning from reasoning_content (Qwen3) or thinking (others): swap both.
        reasoning = _field_region(tokenizer, tm, i, ("reasoning_content", "thinking"), text, thinking) if (
            "thinking" in m) else None
        first = min(content[0], reasoning[0]) if reasoning else content[0]
        header = _generation_header(tokenizer, messages[:i], thinking)
        h = text.rfind(header, prev_end, first) if header else -1
        start = h + len(header) if h >= 0 else first
        end = content[1]
        if len(spans) not in cut_turns:
            eot = next((t for t in specials if text.startswith(t, end)), None)
            end += len(eot) if eot else 0
        elif reasoning and not m["content"]:
            end = reasoning[1]  # cut inside its reasoning: the closing tag is the template's, not the target's
        spans.append(AssistantSpan(start, content, reasoning, end))
        prev_end = max(content[1], reasoning[1] if reasoning else 0)
    return spans


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _cut_turns(conversation: dict[str, Any]) -> frozenset[int]:
    """Assistant turns (by index among assistant turns) whose regenerated answer hit max_tokens."""
    reasons = (conversation.get("regen") or {}).get("finish_reasons") or []
    return frozenset(j for j, r in enumerate(reasons) if r == "length")


def tokenize_conversation(tokenizer: Any, conversation: dict[str, Any], max_length: int, thinking: bool) -> TokenizedSample:
    """Render with the target's template, tokenise piece by piece, mask the assistant spans, truncate.

    Raises DataError when the template drops or rewrites an answer, or when the pieces do not
    tokenise back to the rendered text.
    """
    messages = conversation["messages"]
    text = render_chat(tokenizer, messages, thinking, add_generation_prompt=False)
    spans = assistant_spans(tokenizer, messages, text, thinking, _cut_turns(conversation))
    ids: list[int] = []
    mask: list[int] = []
    cursor = 0
    for sp in spans:
        for piece, flag in ((text[cursor : sp.start], 0), (text[sp.start : sp.end], 1)):
            piece_ids = _encode(tokenizer, piece)
            ids += piece_ids
            mask += [flag] * len(piece_ids)
        cursor = sp.end
    tail = _encode(tokenizer, text[cursor:])
    ids, mask = ids + tail, mask + [0] * len(tail)
    if tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) != text:
        raise MaskError(
            "tokenizer does not reproduce the text",
            f"conversation {conversation.get('id')!r}: the tokenizer does not reproduce the rendered text piece by piece",
            "use a tokenizer whose encodings concatenate (byte-level BPE: Qwen, Llama 3, SmolLM2, GPT-2 style)",
        )
    # Independent count for the coverage check: each answer (and its reasoning where the template
    # rendered it) tokenised alone from the record, plus the template's own text in the span.
    answers = [m for m in messages if m["role"] == "assistant"]
    expected = edges = 0
    for m, sp in zip(answers, spans, strict=True):
        body = m["content"].strip()
        edge = len(_encode(tokenizer, m["content"][: m["content"].find(body)])) if body else 0
        edge += len(_encode(tokenizer, m["content"][m["content"].rfind(body) + len(body) :])) if body else 0
        edges += edge
        expected += len(_encode(tokenizer, body)) + edge
        expected += sum(len(_encode(tokenizer, t)) for t in sp.template_pieces(text))
        if sp.reasoning:
            expected += len(_encode(tokenizer, m["thinking"]))
    full = sum(mask)
    truncated = len(ids) > max_length
    ids, mask = ids[:max_length], mask[:max_length]
    return TokenizedSample(
        input_ids=ids,
        loss_mask=mask,
        num_loss_tokens=sum(mask),
        num_assistant_tokens=expected,
        truncated=truncated,
        thinking=thinking,
        full_loss_tokens=full,
        spans=[text[sp.start : sp.end] for sp in spans],
        turns=len(spans),
        edge_whitespace_tokens=edges,
    )


# What to do about each reason a sample is skipped (shown with the counts).
SKIP_HINTS = {
    "no assistant turn": "regenerate answers with `deepspec data regen`",
    "empty assistant answer": "regenerate the empty answers (`deepspec data regen`); fetch drops them from sources",
    "answer not rendered by the chat template": "the template drops assistant turns: set target.chat_template",
    "template rewrites a turn": "set target.chat_template to a template that renders each message once",
    "tokenizer does not reproduce the text": "use the target's own (byte-level BPE) tokenizer",
    "private-use characters in the text": "remove U+E000/U+E001 from the data (deepspec locates turns with them)",
    "loss mask does not match the answer": "check the chat template (target.chat_template) with `deepspec data show`",
    "too few loss tokens": "raise data.max_length or lower data.min_loss_tokens",
    "answer cut by max_tokens": "data.drop_truncated = false keeps them (without an end-of-turn token)",
}


def describe_skips(skipped: Mapping[str, int]) -> str:
    """'reason: n (what to do); ...' for skipped samples, most frequent first."""
    return "; ".join(
        f"{reason}: {n} ({SKIP_HINTS.get(reason, 'see deepspec data show')})"
        for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1])
    )


def no_samples_error(where: str, skipped: Mapping[str, int], seen: int | None = None) -> DataError:
    """The error for a data set left with no usable sample, naming the file and every skip reason."""
    total = sum(skipped.values()) if seen is None else seen
    if not total:
        return DataError(f"{where} holds no conversations", "point data.train at regenerated conversation files")
    return DataError(
        f"no usable training sample in {where}: 0 of {total} kept — {describe_skips(skipped)}",
        "fix the data or the setting named above, then rerun",
    )


@dataclass
class TokenizeStats:
    seen: int = 0
    kept: int = 0
    truncated: int = 0  # kept samples cut to max_length
    skipped: Counter = field(default_factory=Counter)  # reason → samples

    def describe_skips(self) -> str:
        return describe_skips(self.skipped)

    def summary(self, max_length: int) -> str:
        """One line for a run's log: usable, cut to max_length, skipped by reason."""
        line = f"data: {self.kept:,} of {self.seen:,} conversations usable, {self.truncated:,} cut to data.max_length = {max_length}"
        return line + (f"; skipped — {self.describe_skips()}" if self.skipped else "")


def _empty_answer(conv: dict[str, Any], thinking: bool) -> bool:
    """An assistant turn with no content: only a thinking answer cut by max_tokens may lack one."""
    cut = _cut_turns(conv)
    answers = [m for m in conv["messages"] if m["role"] == "assistant"]
    return any(
        not m["content"].strip() and not (thinking and (m.get("thinking") or "").strip() and j in cut)
        for j, m in enumerate(answers)
    )


def iter_tokenized(
    path: Path | str,
    tokenizer: Any,
    max_length: int,
    thinking: bool,
    min_loss_tokens: int = 1,
    stats: TokenizeStats | None = None,
    limit: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    drop_truncated: bool = False,
) -> Iterator[tuple[str, TokenizedSample]]:
    """(conversation id, sample) for each usable conversation of a JSONL file, in file order.

    Skipped and counted by reason in ``stats`` (see :data:`SKIP_HINTS`): no assistant turn, an empty
    answer, a template that drops or rewrites a turn, a mask whose size does not match the answers'
    independent token count, fewer than ``min_loss_tokens`` supervised tokens after truncation.
    With ``drop_truncated``, conversations with an answer cut by ``max_tokens`` are skipped too
    (by default they are kept, without the end-of-turn token the target never produced).
    ``on_skip(id, reason)`` hears of each skipped conversation.
    """
    stats = stats if stats is not None else TokenizeStats()
    for conv in read_conversations(path, limit=limit):
        stats.seen += 1
        reason = sample = None
        if not any(m["role"] == "assistant" for m in conv["messages"]):
            reason = "no assistant turn"
        elif _empty_answer(conv, thinking):
            reason = "empty assistant answer"
        elif drop_truncated and _cut_turns(conv):
            reason = "answer cut by max_tokens"
        else:
            try:
                sample = tokenize_conversation(tokenizer, conv, max_length, thinking)
            except MaskError as err:  # this conversation only; a missing template fails the whole run
                reason = err.reason
        if sample is not None and sample.mask_problem():
            reason = "loss mask does not match the answer"
        elif sample is not None and sample.num_loss_tokens < min_loss_tokens:
            reason = "too few loss tokens"
        if reason is not None or sample is None:
            assert reason is not None  # every path that leaves no sample names a reason
            stats.skipped[reason] += 1
            if on_skip:
                on_skip(conv["id"], reason)
            continue
        stats.kept += 1
        stats.truncated += sample.truncated
        yield conv["id"], sample


def require_samples(stats: TokenizeStats, files: Sequence[str | Path]) -> None:
    """Raise :func:`no_samples_error` when no sample of ``files`` is usable."""
    if not stats.kept:
        raise no_samples_error(", ".join(str(f) for f in files), stats.skipped, stats.seen)
