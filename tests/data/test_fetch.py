import json

import pytest
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.data.conversations import read_conversations
from deepspec_core.data.fetch import fetch, heldout_path
from deepspec_core.errors import DataError

pytestmark = pytest.mark.unit


def _sharegpt(i: int, turns: int = 1) -> dict:
    conv = [{"from": "system", "value": "You are terse."}] if i % 3 == 0 else []
    for t in range(turns):
        conv += [{"from": "human", "value": f"question {i}.{t}"}, {"from": "gpt", "value": f"answer {i}.{t}"}]
    return {"id": f"row{i}", "source": "unit", "conversations": conv}


@pytest.fixture
def sharegpt_file(tmp_path):
    rows = [_sharegpt(i, turns=1 + i % 2) for i in range(20)]
    rows.append(dict(rows[4], id="copy-of-4"))  # exact duplicate content, other id
    rows.append({"conversations": [{"from": "narrator", "value": "x"}]})
    rows.append({"conversations": [{"from": "human", "value": ""}]})
    rows.append({"prompt": "no chat here"})
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    path = tmp_path / "src.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fetch_sharegpt_with_bad_rows(sharegpt_file, tmp_path):
    out = tmp_path / "convs.jsonl"
    r = fetch(str(sharegpt_file), out, test_size=0.2, seed=1)
    assert r.rows_in == 25
    assert r.kept == 20 and r.duplicates == 1
    assert dict(r.dropped) == {"unknown role 'narrator'": 1, "empty content": 1, "no messages/conversations/turns field": 1,
                               "invalid JSON": 1}
    train = list(read_conversations(out))
    held = list(read_conversations(heldout_path(out)))
    assert (len(train), len(held)) == (16, 4) == (r.train, r.heldout_count)
    ids = [c["id"] for c in train + held]
    assert sorted(ids) == sorted(f"row{i}" for i in range(20))  # source ids kept, no duplicate
    # Source order is kept within each file; system messages survive; meta carries scalar columns.
    assert [int(c["id"][3:]) for c in train] == sorted(int(c["id"][3:]) for c in train)
    row0 = next(c for c in train + held if c["id"] == "row0")
    assert row0["messages"][0] == {"role": "system", "content": "You are terse."}
    assert row0["meta"] == {"source": "unit"}
    assert heldout_path(out).name == "convs.heldout.jsonl"


def test_fetch_is_deterministic_and_hashes_missing_ids(tmp_path):
    src = tmp_path / "src.json"
    src.write_text(json.dumps([{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(10)]))
    a = fetch(str(src), tmp_path / "a.jsonl", test_size=3, seed=5)
    fetch(str(src), tmp_path / "b.jsonl", test_size=3, seed=5)
    assert a.heldout_count == 3
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    ids = [c["id"] for c in read_conversations(tmp_path / "a.jsonl")]
    assert len(set(ids)) == 7 and all(len(i) == 16 for i in ids)


def test_fetch_parquet_turns_and_limit(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "src.parquet"
    pq.write_table(pa.Table.from_pylist([{"turns": [f"t{i}", "follow-up"], "category": "c"} for i in range(8)]), src)
    r = fetch(str(src), tmp_path / "p.jsonl", test_size=0, limit=5)
    assert r.kept == 5 and r.heldout is None and not heldout_path(tmp_path / "p.jsonl").exists()
    first = next(read_conversations(tmp_path / "p.jsonl"))
    assert first["messages"] == [{"role": "user", "content": "t0"}, {"role": "user", "content": "follow-up"}]
    assert first["meta"] == {"category": "c"}


def test_fetch_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        fetch(str(tmp_path / "nope.jsonl"), tmp_path / "o.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    with pytest.raises(DataError, match="no usable conversation"):
        fetch(str(bad), tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
    ten = tmp_path / "ten.json"
    ten.write_text(json.dumps([{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(10)]))
    for count in (10, 1000):  # a held-out count of every row or more: nothing left to train on
        with pytest.raises(DataError, match=f"--test-size {count} would hold out every row: .* has 10 usable"):
            fetch(str(ten), tmp_path / "o.jsonl", test_size=count)
    assert not (tmp_path / "o.jsonl").exists()
    assert fetch(str(ten), tmp_path / "o.jsonl", test_size=9).heldout_count == 9


def test_fetch_cli_prints_summary(sharegpt_file, tmp_path):
    out = tmp_path / "cli.jsonl"
    res = CliRunner().invoke(app, ["data", "fetch", str(sharegpt_file), "--out", str(out), "--test-size", "2"])
    assert res.exit_code == 0, res.output
    assert "dropped: unknown role 'narrator'" in res.output and "duplicates removed" in res.output
    assert sum(1 for _ in open(out)) == 18
    res = CliRunner().invoke(app, ["data", "fetch", str(tmp_path / "missing.parquet"), "--out", str(out)])
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output


def test_fetch_hub_dataset_through_datasets(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load(source, subset, split, streaming):
        calls.append((source, subset, split, streaming))
        if source == "missing/dataset":
            raise FileNotFoundError("not on the hub")
        return iter([_sharegpt(i) for i in range(10)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr("deepspec_core.hub.hub_reachable", lambda: True)  # this machine has no hub
    r = fetch("org/prompts", tmp_path / "h.jsonl", subset="chat", split="train", test_size=0, limit=4)
    assert calls == [("org/prompts", "chat", "train", True)]  # streamed: --limit needs no full download
    assert r.kept == 4 and r.rows_in == 4
    with pytest.raises(DataError, match="cannot load dataset 'missing/dataset'"):
        fetch("missing/dataset", tmp_path / "m.jsonl")


@pytest.mark.parametrize("fmt", ["parquet", "json", "jsonl"])
def test_fetch_brings_row_system_prompts_in_and_drops_tool_turns_and_empty_answers(tmp_path, fmt):
    """The inputs users bring, in every file format: each drop is counted under a reason that names
    the role or kind."""
    rows = [
        {"system_prompt": "You are terse.", "messages": [{"role": "user", "content": "q1"},
                                                         {"role": "assistant", "content": "a1"}]},
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "   "}]},
        {"messages": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": None,
                                                          "tool_calls": [{"id": "t"}]}]},
        {"messages": [{"role": "user", "content": "q4"}, {"role": "tool", "content": "{}"}]},
        {"messages": [{"role": "user", "content": "q5"}, {"role": "critic", "content": "meh"}]},
        {"messages": [{"role": "user", "content": "q6"}, {"role": "assistant", "content": "a6"}]},
    ]
    src = tmp_path / f"src.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # parquet columns: messages as a list of structs, like hub exports
        table = pa.Table.from_pylist([{"messages": [{k: m.get(k) for k in ("role", "content")} |
                                                    ({"tool_calls": json.dumps(m["tool_calls"])} if "tool_calls" in m else {})
                                                    for m in r["messages"]],
                                       "system_prompt": r.get("system_prompt")} for r in rows])
        pq.write_table(table, src)
    elif fmt == "json":
        src.write_text(json.dumps(rows))
    else:
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = fetch(str(src), tmp_path / "out.jsonl", test_size=0)
    assert r.kept == 2 and dict(r.dropped) == {
        "empty assistant answer": 1, "tool-call turn (assistant with tool_calls)": 1,
        "tool-call turn (role 'tool')": 1, "unknown role 'critic'": 1}
    first = next(read_conversations(tmp_path / "out.jsonl"))
    assert first["messages"][0] == {"role": "system", "content": "You are terse."}


def test_fetch_never_replaces_another_fetch_without_overwrite(sharegpt_file, tmp_path):
    out = tmp_path / "convs.jsonl"
    first = fetch(str(sharegpt_file), out, test_size=4)
    before = (out.read_text(), heldout_path(out).read_text())
    fetch(str(sharegpt_file), out, test_size=4)  # the same fetch again: the same files
    assert (out.read_text(), heldout_path(out).read_text()) == before
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"already holds a fetch made with other inputs: source .* → ") as info:
        fetch(str(other), out, test_size=0)
    assert "--overwrite" in info.value.hint
    assert (out.read_text(), heldout_path(out).read_text()) == before
    with pytest.raises(DataError, match="test_size 4 → 0"):
        fetch(str(sharegpt_file), out, test_size=0)
    # With --overwrite and no held-out split the old held-out file goes too: the pair stays one unit.
    r = fetch(str(sharegpt_file), out, test_size=0, overwrite=True)
    assert r.heldout is None and not heldout_path(out).exists() and r.train == first.kept
    res = CliRunner().invoke(app, ["data", "fetch", str(other), "--out", str(out)])
    assert res.exit_code == 1 and "already holds a fetch" in res.output and "Traceback" not in res.output
