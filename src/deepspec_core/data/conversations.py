"""The conversation record (docs/data.md) and its normalisation from common chat-data layouts.

A conversation is a plain JSON object::

    {"id": str, "messages": [{"role": "system"|"user"|"assistant", "content": str, "thinking"?: str}],
     "meta": {...}, "regen"?: {...}}

Plain dicts (not classes) keep the JSONL files the single source of truth: what a test or a user
writes by hand is exactly what the library reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepspec_core.errors import DataError

ROLES = ("system", "user", "assistant")

# ShareGPT speaker names seen in the wild, mapped to our three roles.
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "prompter": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
}
# Speakers of tool use: such turns are dropped with their kind named (deepspec trains on chat turns).
_TOOL_ROLES = {"tool", "function", "function_call", "observation", "ipython", "tool_call", "tool_response"}
_ID_KEYS = ("id", "conversation_id", "prompt_id", "uuid")
_SYSTEM_KEYS = ("system", "system_prompt")  # row-level system prompt columns (ShareGPT exports, SFT sets)


class BadRow(ValueError):
    """A source row that cannot become a conversation; ``reason`` is a short countable label."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def content_hash(messages: list[dict[str, Any]]) -> str:
    """Stable hash of the messages only (not id or meta): equal conversations hash equal."""
    canon = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _text(value: Any) -> str:
    """Message content as a string; OpenAI content-part lists are joined, other types rejected."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    if value is None:
        raise BadRow("missing content")
    raise BadRow("non-text content")


def _role(speaker: Any) -> str:
    """A source speaker name → our role; raises BadRow naming tool turns and unknown roles."""
    name = str(speaker).strip().lower() if speaker is not None else ""
    if name in _TOOL_ROLES:
        raise BadRow(f"tool-call turn (role {name!r})")
    role = _SHAREGPT_ROLES.get(name)
    if role is None:
        raise BadRow(f"unknown role {name!r}" if name else "turn without a role")
    return role


def _from_sharegpt(turns: Any) -> list[dict[str, Any]]:
    if not isinstance(turns, list):
        raise BadRow("conversations is not a list")
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise BadRow("turn is not an object")
        role = _role(turn.get("from", turn.get("role")))
        out.append({"role": role, "content": _text(turn.get("value", turn.get("content")))})
    return out


def _from_openai(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise BadRow("messages is not a list")
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise BadRow("turn is not an object")
        role = _role(m.get("role"))
        if m.get("tool_calls") or m.get("function_call"):
            raise BadRow(f"tool-call turn ({role} with tool_calls)")
        msg = {"role": role, "content": _text(m.get("content"))}
        thinking = m.get("thinking", m.get("reasoning_content"))
        if role == "assistant" and isinstance(thinking, str) and thinking.strip():
            msg["thinking"] = thinking
        out.append(msg)
    return out


def _from_turns(turns: Any) -> list[dict[str, Any]]:
    # {"turns": [...]} (MT-Bench and our eval prompt files) lists the user turns only.
    if not isinstance(turns, list):
        raise BadRow("turns is not a list")
    return [{"role": "user", "content": _text(t)} for t in turns]


def check_messages(messages: list[dict[str, Any]]) -> None:
    """Raise :class:`BadRow` unless ``messages`` is a usable chat: known roles, text, a user turn."""
    if not messages:
        raise BadRow("no messages")
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise BadRow("unknown role")
        if not isinstance(m.get("content"), str):
            raise BadRow("non-text content")
        if m["role"] == "system" and i > 0:
            raise BadRow("system message not first")
        if m["role"] != "assistant" and not m["content"].strip():
            raise BadRow("empty content")
    if not any(m["role"] == "user" for m in messages):
        raise BadRow("no user turn")


def normalize_row(row: Any) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
    """One source row → (messages, source id or None, meta). Raises :class:`BadRow`.

    Accepted layouts: ShareGPT ``conversations`` (``from``/``value``), OpenAI ``messages``
    (``role``/``content``), and ``{"turns": [user, ...]}``; a row-level ``system`` or
    ``system_prompt`` becomes the first system message. Scalar columns besides the chat (e.g.
    ``source``, ``category``) are kept in ``meta``. Tool-call turns, unknown roles and empty
    assistant answers drop the row, with a reason naming the role or kind.
    """
    if not isinstance(row, dict):
        raise BadRow("row is not an object")
    if "messages" in row:
        messages, key = _from_openai(row["messages"]), "messages"
    elif "conversations" in row:
        messages, key = _from_sharegpt(row["conversations"]), "conversations"
    elif "turns" in row:
        messages, key = _from_turns(row["turns"]), "turns"
    else:
        raise BadRow("no messages/conversations/turns field")
    messages = _with_row_system(row, messages)
    check_messages(messages)
    if any(m["role"] == "assistant" and not m["content"].strip() for m in messages):
        raise BadRow("empty assistant answer")
    source_id = next((str(row[k]) for k in _ID_KEYS if row.get(k) not in (None, "")), None)
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
    for k, v in row.items():
        if k not in (key, "meta", *_ID_KEYS, *_SYSTEM_KEYS) and isinstance(v, (str, int, float, bool)):
            meta.setdefault(k, v)
    return messages, source_id, meta


def _with_row_system(row: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row-level ``system`` / ``system_prompt`` column becomes the first system message (the
    template must see it); one that contradicts the conversation's own system message is refused."""
    given = {str(row[k]).strip() for k in _SYSTEM_KEYS if isinstance(row.get(k), str) and row[k].strip()}
    if not given:
        return messages
    own = messages[0]["content"].strip() if messages and messages[0]["role"] == "system" else None
    if len(given) > 1 or (own is not None and own not in given):
        raise BadRow("conflicting system prompts (row field and first message)")
    if own is not None:
        return messages
    return [{"role": "system", "content": given.pop()}, *messages]


def make_conversation(messages: list[dict[str, Any]], conv_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"id": conv_id, "messages": messages, "meta": meta}


def validate_conversation(obj: Any, where: str) -> dict[str, Any]:
    """Check one record of a conversations file; ``where`` (file:line) names it in the error."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
        raise DataError(f"{where}: not a conversation (needs a string 'id')", "create the file with `deepspec data fetch`")
    try:
        check_messages(obj.get("messages") or [])
    except BadRow as err:
        raise DataError(f"{where}: conversation {obj['id']!r} is invalid: {err.reason}") from None
    return obj


def read_conversations(path: Path | str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Stream the conversations of a JSONL file, validated; fails on the first bad line, naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"conversations file {path} does not exist", "create it with `deepspec data fetch`")
    with open(path, encoding="utf-8") as f:
        n = 0
        for lineno, line in enumerate(f, 1):
            if limit is not None and n >= limit:
                return
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
            yield validate_conversation(obj, f"{path}:{lineno}")
            n += 1


def require_eval_files(files: list[str]) -> None:
    """Raise DataError for a ``data.eval`` file that does not exist (before any work)."""
    for f in files:
        if not Path(f).expanduser().is_file():
            raise DataError(
                f"data.eval file {f} does not exist (the validation set)",
                "regenerate the held-out split, or set data.eval = [] to validate on the tail of data.train",
            )


def dumps(conv: dict[str, Any]) -> str:
    """One JSONL line (with the newline)."""
    return json.dumps(conv, ensure_ascii=False) + "\n"

