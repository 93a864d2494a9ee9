"""Benchmarks: registry, prompt wording identical to the reference files, fixed-seed subsets, errors."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from deepspec_core.errors import DataError, SpecError
from deepspec_core.eval import benchmarks as bm

pytestmark = pytest.mark.unit

# The reference's full prompt files (one <benchmark>.jsonl of {"turns": [...]} each), where a
# developer has them: DEEPSPEC_REFERENCE_PROMPTS=/path/to/eval_prompts.
SHARED = Path(os.environ.get("DEEPSPEC_REFERENCE_PROMPTS", "/nonexistent"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="set DEEPSPEC_REFERENCE_PROMPTS to the reference prompt files")


def test_registry_has_the_reference_benchmarks_with_their_counts_and_domains():
    counts = {
        "gsm8k": 500,
        "math500": 500,
        "aime25": 30,
        "humaneval": 164,
        "mbpp": 256,
        "livecodebench": 500,
        "mt-bench": 80,
        "alpaca": 500,
        "arena-hard-v2": 500,
        "aime24": 30,
        "lbpp": 162,
    }
    assert {n: bm.get_benchmark(n).num_samples for n in counts} == counts
    assert set(bm.BENCHMARKS.names()) == set(counts)
    assert [
        bm.domain_of(n) for n in ("gsm8k", "aime24", "lbpp", "humaneval", "mt-bench", "arena-hard-v2")
    ] == ["math", "math", "code", "code", "chat", "chat"]
    assert bm.parse_benchmarks(None) == bm.REFERENCE_NINE
    assert bm.parse_benchmarks("gsm8k, mbpp") == ["gsm8k", "mbpp"]
    with pytest.raises(SpecError, match="unknown benchmark 'gsm9k'"):
        bm.parse_benchmarks("gsm9k")


def test_hub_rows_are_worded_like_the_reference_files():
    assert bm.get_benchmark("gsm8k").format_row({"question": "What is 2+2?"}) == [
        "What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}."
    ]
    assert bm.get_benchmark("humaneval").format_row({"prompt": 'def f():\n    """doc"""\n'}) == [
        "Write a solution to the following problem and make sure that it passes the tests:\n```python\n"
        'def f():\n    """doc"""\n\n```'
    ]
    assert bm.get_benchmark("alpaca").format_row({"instruction": "Sort these.", "input": "3 1 2"}) == [
        "Sort these.\n\n3 1 2"
    ]
    assert bm.get_benchmark("alpaca").format_row({"instruction": "Say hi.", "input": ""}) == ["Say hi."]
    assert bm.get_benchmark("mt-bench").format_row({"prompt": ["a", "b"]}) == ["a", "b"]


@needs_shared
def test_livecodebench_wording_round_trips_the_reference_file():
    rows = bm.read_turns_file(SHARED / "livecodebench.jsonl")
    fmt = bm.get_benchmark("livecodebench").format_row
    for (text,) in rows[:200]:
        body = text[len(bm.LCB_PREFIX) :]
        question, _, rest = body.partition("\n\n### Format: ")
        if rest.startswith("Use the following code structure:\n```python\n"):
            starter = rest[len("Use the following code structure:\n```python\n") : -len(bm.LCB_ANSWER)]
        else:
            starter = ""
        assert fmt({"question_content": question, "starter_code": starter}) == [text]


@needs_shared
def test_subsets_are_drawn_as_the_reference_draws_them_and_limit_takes_a_prefix():
    full = bm.load_benchmark("gsm8k", SHARED)
    assert len(full) == 500 and full.total == 1319 and full.domain == "math"
    rows = bm.read_turns_file(SHARED / "gsm8k.jsonl")
    order = list(range(len(rows)))
    random.Random(980406).shuffle(order)  # the reference: shuffle the rows, take the first 500
    assert full.turns == [rows[i][:1] for i in order[:500]]
    assert all(t[0].endswith(bm.MATH_SUFFIX) for t in full.turns)
    head = bm.load_benchmark("gsm8k", SHARED, limit=7)
    assert head.turns == full.turns[:7] and head.content_hash != full.content_hash
    small = bm.load_benchmark("aime25", SHARED)
    assert len(small) == 30 and small.turns == bm.read_turns_file(SHARED / "aime25.jsonl")  # all, in order
    # the packaged copies are exactly those selections, so their hashes equal a full-file run's
    for name in ("gsm8k", "mbpp", "math500", "humaneval", "mt-bench"):
        assert bm.load_benchmark(name, "packaged").content_hash == bm.load_benchmark(name, SHARED).content_hash


def test_the_first_three_gsm8k_prompts_are_the_references():
    """random.Random(980406).shuffle of gsm8k's 1,319 rows starts with rows 435, 902 and 303."""
    got = bm.load_benchmark("gsm8k", "packaged", limit=3)
    assert [t[0][:40] for t in got.turns] == [
        "Ray had 25 lollipops. He kept 5 lollipop",
        "The educational shop is selling notebook",
        "Elise has been selling her Dad's collect",
    ]
    order = list(range(1319))
    random.Random(980406).shuffle(order)
    assert order[:3] == [435, 902, 303] and bm.select(1319, 500)[:3] == [435, 902, 303]


def test_only_the_first_user_turn_is_decoded_unless_all_turns():
    first = bm.load_benchmark("mt-bench", "packaged", limit=3)
    both = bm.load_benchmark("mt-bench", "packaged", limit=3, all_turns=True)
    assert all(len(t) == 1 for t in first.turns) and all(len(t) == 2 for t in both.turns)
    assert [t[0] for t in first.turns] == [t[0] for t in both.turns]
    assert first.content_hash != both.content_hash


def test_local_file_errors_name_the_line(tmp_path):
    (tmp_path / "mbpp.jsonl").write_text('{"turns": ["ok"]}\n{"turns": "not a list"}\n')
    with pytest.raises(DataError, match=r"mbpp.jsonl:2"):
        bm.load_benchmark("mbpp", tmp_path)
    (tmp_path / "gsm8k.jsonl").write_text("{bad json\n")
    with pytest.raises(DataError, match=r"gsm8k.jsonl:1 is not valid JSON"):
        bm.load_benchmark("gsm8k", tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        bm.load_benchmark("gsm8k", tmp_path / "missing")


def test_a_missing_file_falls_back_to_the_hub(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(bench):
        calls.append(bench.name)
        return [[f"q{i}"] for i in range(40)]

    monkeypatch.setattr(bm, "fetch_turns", fake_fetch)
    got = bm.load_benchmark("aime24", tmp_path, limit=5)
    assert calls == ["aime24"] and len(got) == 5 and got.total == 40
    assert got.source == "hub:HuggingFaceH4/aime_2024:train"
    order = list(range(40))
    random.Random(980406).shuffle(order)  # aime24 takes 30 of the 40 rows as the reference draws them
    assert got.turns == [[f"q{i}"] for i in order[:5]]
    assert json.loads(json.dumps(got.turns)) == got.turns  # plain lists of strings


def test_packaged_prompts_cover_the_offline_benchmarks():
    from deepspec_core.eval.benchmarks import get_benchmark, load_benchmark

    for name in ("gsm8k", "math500", "humaneval", "mbpp", "lbpp", "mt-bench"):
        b = load_benchmark(name, "packaged")
        assert len(b.turns) == get_benchmark(name).num_samples and all(t and t[0] for t in b.turns)


def test_offline_a_hub_benchmark_fails_at_once_naming_the_packaged_prompts(tmp_path, monkeypatch):
    from deepspec_core.hub import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_reachable.cache_clear()
    try:
        with pytest.raises(DataError, match="aime25 .* the Hugging Face hub is unreachable") as info:
            bm.load_benchmark("aime25", tmp_path)
        assert "--data-dir packaged" in info.value.hint
        assert info.value.message.startswith(f"--data-dir {tmp_path} has no aime25.jsonl, and cannot fetch")
    finally:
        hub_reachable.cache_clear()
