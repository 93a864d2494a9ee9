"""What ``data regen`` and its backends share: sampling settings, one answer, one conversation's
outcome, the backend protocol and the per-conversation turn logic.

``regen.py`` drives a :class:`Backend` — ``local_backend.py`` (in-process, batched) or
``openai_client.py`` (HTTP, concurrent) — and both backends run :func:`conversation_turns`, so the
three import these types from here and none of them imports another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    max_tokens: int = 4096
    seed: int = 0  # turn t of conversation c samples with turn_seed(seed, c, t), on every backend

    @classmethod
    def from_spec(cls, regen: Any) -> Sampling:
        return cls(regen.temperature, regen.top_p, regen.top_k, regen.min_p, regen.max_tokens, regen.seed)


def turn_seed(seed: int, conv_id: str, turn: int) -> int:
    """The sampling seed of one answer: a function of the run's seed, the conversation id and the
    turn only, so an answer does not depend on batching, concurrency, order or resumption."""
    digest = hashlib.sha256(f"{seed}/{conv_id}/{turn}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class TurnResult:
    content: str
    thinking: str | None
    finish_reason: str  # "stop" | "length"
    tokens: int


@dataclass
class Outcome:
    """What became of one conversation: a record to write, or an error message."""

    record: dict[str, Any] | None = None
    error: str | None = None
    tokens: int = 0
    truncated: bool = False


class Backend(Protocol):
    name: str
    model_name: str  # recorded in each record's regen block

    def run(
        self, jobs: Iterator[tuple[int, dict[str, Any]]], sampling: Sampling, thinking: bool
    ) -> Iterator[tuple[int, Outcome]]:
        """Yield (sequence number, outcome) for every job, in any order."""
        ...


# -- one conversation ----------------------------------------------------------------------------


TurnGen = Generator[list[dict[str, Any]], TurnResult, Outcome]


def conversation_turns(conv: dict[str, Any], backend: str, model: str, sampling: Sampling, thinking: bool) -> TurnGen:
    """Yield the history before each answer to generate; receive the answer; return the outcome."""
    messages = conv["messages"]
    history: list[dict[str, Any]] = []
    reasons: list[str] = []
    tokens = 0
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            continue
        history.append({"role": m["role"], "content": m["content"]})
        # Consecutive user turns (no answer between them in the source) are answered once, after the last.
        if m["role"] == "user" and (i + 1 == len(messages) or messages[i + 1]["role"] != "user"):
            answer = yield list(history)
            problem = answer_problem(answer, thinking)
            if problem:
                return Outcome(error=f"answer {len(reasons) + 1}: {problem}")
            msg = {"role": "assistant", "content": answer.content}
            if answer.thinking:
                msg["thinking"] = answer.thinking
            history.append(msg)
            reasons.append(answer.finish_reason)
            tokens += answer.tokens
    truncated = "length" in reasons
    record = {
        "id": conv["id"],
        "messages": history,
        "meta": conv.get("meta", {}),
        "regen": {
            "backend": backend,
            "model": model,
            "sampling": asdict(sampling),
            "finish_reason": "length" if truncated else "stop",
            "finish_reasons": reasons,
            "thinking": thinking,
            "tokens": tokens,
        },
    }
    return Outcome(record=record, tokens=tokens, truncated=truncated)


def answer_problem(answer: TurnResult, thinking: bool) -> str | None:
    """Why an answer must not be written, or None. No empty answer is a success: only a thinking
    answer cut by max_tokens inside its reasoning may lack content (it is kept, marked truncated)."""
    if answer.content.strip():
        return None
    if thinking and answer.thinking and answer.finish_reason == "length":
        return None
    if thinking and answer.thinking:
        return "the answer is empty after its reasoning"
    if answer.finish_reason == "length":
        return f"the answer is empty: max_tokens ran out after {answer.tokens} tokens, before any content"
    return "the target returned an empty answer"


def context_problem(prompt_tokens: int, max_tokens: int, context: int | None) -> str | None:
    """Why a prompt cannot be answered within the target's context window, or None."""
    if context is None or prompt_tokens + max_tokens <= context:
        return None
    return (f"prompt of {prompt_tokens} tokens + max_tokens {max_tokens} = {prompt_tokens + max_tokens} exceeds the "
            f"target's context of {context} tokens (lower --max-tokens or drop long prompts)")
