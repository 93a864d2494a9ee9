import json

import pytest

from deepspec_core.data.conversations import BadRow, content_hash, normalize_row, read_conversations
from deepspec_core.errors import DataError

pytestmark = pytest.mark.unit


def test_sharegpt_roles_and_meta():
    row = {"id": 7, "source": "math", "score": 0.5, "tags": ["x"],
           "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    messages, source_id, meta = normalize_row(row)
    assert messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert source_id == "7"
    assert meta == {"source": "math", "score": 0.5}  # lists are not scalar metadata


def test_openai_messages_with_content_parts_and_reasoning():
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "He"}, {"type": "text", "text": "llo"}]},
                        {"role": "assistant", "content": "Hi", "reasoning_content": "greet back"}]}
    messages, source_id, _ = normalize_row(row)
    assert source_id is None
    assert messages == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi", "thinking": "greet back"}]


def test_a_row_level_system_prompt_becomes_the_first_message():
    for key in ("system", "system_prompt"):
        row = {key: "You are terse.", "source": "x",
               "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
        messages, _, meta = normalize_row(row)
        assert messages[0] == {"role": "system", "content": "You are terse."} and len(messages) == 3
        assert meta == {"source": "x"}  # not duplicated into meta
    same = {"system": "S", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]}
    assert normalize_row(same)[0] == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]


def test_turns_are_user_turns():
    messages, _, _ = normalize_row({"turns": ["first", "second"]})
    assert [m["role"] for m in messages] == ["user", "user"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("text", "row is not an object"),
        ({"text": "hi"}, "no messages/conversations/turns field"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "unknown role 'alien'"),
        ({"conversations": [{"value": "x"}]}, "turn without a role"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}]},
         "tool-call turn (role 'function_call')"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "42"}]}, "tool-call turn (role 'tool')"),
        ({"messages": [{"role": "user", "content": "q"},
                       {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}]},
         "tool-call turn (assistant with tool_calls)"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " \n"}]}, "empty assistant answer"),
        ({"system": "Be terse.", "messages": [{"role": "system", "content": "Be verbose."}, {"role": "user", "content": "q"}]},
         "conflicting system prompts (row field and first message)"),
        ({"conversations": [{"from": "human", "value": "  "}]}, "empty content"),
        ({"conversations": [{"from": "gpt", "value": "only an answer"}]}, "no user turn"),
        ({"messages": [{"role": "user", "content": {"img": 1}}]}, "non-text content"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "late"}]}, "system message not first"),
        ({"messages": []}, "no messages"),
    ],
)
def test_bad_rows_have_reasons(row, reason):
    with pytest.raises(BadRow) as info:
        normalize_row(row)
    assert info.value.reason == reason


def test_content_hash_ignores_key_order():
    a = [{"role": "user", "content": "x"}]
    b = [{"content": "x", "role": "user"}]
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash([{"role": "user", "content": "y"}])


def test_read_conversations_names_the_bad_line(tmp_path):
    path = tmp_path / "c.jsonl"
    good = {"id": "a", "messages": [{"role": "user", "content": "q"}], "meta": {}}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "messages": []}) + "\n")
    it = read_conversations(path)
    assert next(it)["id"] == "a"
    with pytest.raises(DataError, match=r"c.jsonl:2.*'b' is invalid: no messages"):
        next(it)
    with pytest.raises(DataError, match="does not exist"):
        list(read_conversations(tmp_path / "missing.jsonl"))
