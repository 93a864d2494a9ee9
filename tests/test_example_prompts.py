"""examples/smollm2/make_prompts.py: the offline training prompts are complete, distinct, balanced
over the domains, disjoint from the packaged evaluation prompts, and the narrow mix still makes the
exact prompts of the earlier results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smollm2"


def _make(tmp_path: Path, mix: str, n: int, seed: int = 0) -> list[dict]:
    out = tmp_path / f"{mix}-{seed}.jsonl"
    subprocess.run([sys.executable, "make_prompts.py", "--out", str(out), "--n", str(n), "--mix", mix,
                    "--seed", str(seed)], cwd=EXAMPLE, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _benchmark_turns() -> set[str]:
    root = resources.files("deepspec_core") / "assets" / "eval_prompts"
    return {_norm(t) for f in root.iterdir() if f.name.endswith(".jsonl")
            for line in f.read_text().splitlines() for t in json.loads(line)["turns"]}


@pytest.mark.parametrize("mix", ["wide", "narrow"])
def test_prompts_are_complete_distinct_balanced_and_not_benchmark_items(tmp_path, mix):
    rows = _make(tmp_path, mix, 300)
    texts = [r["messages"][0]["content"] for r in rows]
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    assert len({_norm(t) for t in texts}) == 300
    assert Counter(r["meta"]["domain"] for r in rows) == {"math": 100, "code": 100, "chat": 100}
    # Every template field was filled: no " {name}" left in math or chat (code quotes real sources,
    # whose f-strings have braces; LaTeX's \boxed{}, \binom{n}{k}, \begin{pmatrix} follow a letter or brace).
    prose = [r["messages"][0]["content"] for r in rows if r["meta"]["domain"] != "code"]
    assert not [t for t in prose if re.search(r"(?<![\\}_^a-z])\{[a-z_][a-z_0-9]*\}", t)]
    assert not {_norm(t) for t in texts} & _benchmark_turns()
    assert rows == _make(tmp_path / "again", mix, 300)  # deterministic for a seed


def test_wide_mix_spreads_each_domain_over_more_kinds_of_request(tmp_path):
    wide, narrow = _make(tmp_path, "wide", 600), _make(tmp_path, "narrow", 600)

    def words(rows, domain):  # distinct words (numbers aside) stand for the templates and topics used
        return {w for r in rows if r["meta"]["domain"] == domain
                for w in re.findall(r"[a-z]+", r["messages"][0]["content"].lower())}

    for domain in ("math", "chat"):
        assert len(words(wide, domain)) > 2 * len(words(narrow, domain)), domain
    assert any("$" in r["messages"][0]["content"] for r in wide if r["meta"]["domain"] == "math")
    assert any("```python" in r["messages"][0]["content"] for r in wide if r["meta"]["domain"] == "code")


def test_narrow_mix_makes_the_prompts_of_the_earlier_results(tmp_path):
    # The first prompts of the set behind the earlier results on docs/results-smollm2.md (seed 0).
    # The code prompt comes from the running Python's stdlib, so only math and chat are pinned.
    first = _make(tmp_path, "narrow", 3)
    assert [r["id"] for r in first] == ["math-00000", "code-00001", "chat-00002"]
    assert first[0]["messages"][0]["content"] == (
        "Gus saves $4 every week. After 18 weeks Gus spends $22 on a gift. How much money is left?"
        "\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert first[2]["messages"][0]["content"] == "Explain photography to a ten-year-old in a short paragraph."


def test_heldout_prompts_become_an_eval_directory_of_domain_stand_ins(tmp_path):
    """heldout_prompts.py writes each domain's first n prompts under its stand-in benchmark's name, and
    the evaluation reads them back from --data-dir as those prompts, in order, first turn only."""
    from deepspec_core.eval.benchmarks import load_benchmark

    rows = _make(tmp_path, "wide", 30)
    out = tmp_path / "heldout-prompts"
    subprocess.run([sys.executable, "heldout_prompts.py", str(tmp_path / "wide-0.jsonl"), "--out", str(out),
                    "--n", "4"], cwd=EXAMPLE, check=True, capture_output=True, text=True)
    assert sorted(p.name for p in out.iterdir()) == ["gsm8k.jsonl", "humaneval.jsonl", "mt-bench.jsonl"]
    for domain, bench in [("math", "gsm8k"), ("code", "humaneval"), ("chat", "mt-bench")]:
        expected = [r["messages"][0]["content"] for r in rows if r["meta"]["domain"] == domain][:4]
        loaded = load_benchmark(bench, data_dir=out)
        assert loaded.source == str(out / f"{bench}.jsonl")
        assert [t[0] for t in loaded.turns] == expected


def test_the_example_scripts_answer_bad_arguments_in_one_line_and_keep_what_exists(tmp_path):
    """Each helper script names the argument at fault, without a traceback, and overwrites nothing."""
    row = {"id": "p0", "messages": [{"role": "user", "content": "hi"}], "meta": {"domain": "poetry"}}
    (tmp_path / "poetry.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "broken.jsonl").write_text(json.dumps({**row, "meta": {"domain": "chat"}}) + "\n{oops\n")
    (tmp_path / "precious.jsonl").write_text("mine\n")
    (tmp_path / "adir").mkdir()
    t = str(tmp_path)
    cases = [
        (["heldout_prompts.py", f"{t}/poetry.jsonl", "--out", f"{t}/o"], f"{t}/poetry.jsonl: row 1: meta.domain is 'poetry'"),
        (["heldout_prompts.py", f"{t}/broken.jsonl", "--out", f"{t}/o"], f"{t}/broken.jsonl:2: invalid JSON"),
        (["heldout_prompts.py", f"{t}/missing.jsonl", "--out", f"{t}/o"], f"{t}/missing.jsonl is not a file"),
        (["heldout_prompts.py", f"{t}/poetry.jsonl", "--out", f"{t}/precious.jsonl"], "is a file"),
        (["make_prompts.py", "--out", f"{t}/precious.jsonl", "--n", "6"], "holds other prompts"),
        (["make_prompts.py", "--out", f"{t}/adir", "--n", "6"], "is a directory"),
        (["make_prompts.py", "--out", f"{t}/new.jsonl", "--n", "0"], "--n 0: ask for at least one prompt"),
        (["vocab_coverage.py", f"{t}/adir", f"{t}/adir"], "holds no model.safetensors"),
    ]
    for args, expected in cases:
        run = subprocess.run([sys.executable, *args], cwd=EXAMPLE, capture_output=True, text=True)
        assert run.returncode != 0 and expected in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
    assert (tmp_path / "precious.jsonl").read_text() == "mine\n"
    assert not (tmp_path / "new.jsonl").exists() and not (tmp_path / "o").exists()
