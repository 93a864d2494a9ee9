"""Evaluation benchmarks: where the prompts come from, how they are worded, how many are used.

Each benchmark reads ``<data_dir>/<name>.jsonl`` (one ``{"turns": [str, ...]}`` per line, the format
of the reference's prompt files) when a data directory is given and has the file, and otherwise
fetches its public hub source through ``datasets`` and words the prompts exactly as those files do.
``data_dir="packaged"`` reads the copies shipped with deepspec (``assets/eval_prompts``: gsm8k,
math500, humaneval, mbpp, lbpp and mt-bench, each already the reference's subset of its file, in
the reference's order, so their content hashes equal a full-file run's) — what the demo and
offline tests use.

Selection follows the reference's evaluation (docs/evaluation.md, the protocol): when a file has
more prompts than the benchmark's sample count, ``random.Random(980406).shuffle(rows)`` and the
first N, in that shuffled order; otherwise every row in file order. ``limit`` then takes the first
N of the selection, so a limited run evaluates a prefix of the full run's prompts. Only the first
user turn of each row is decoded (mt-bench included) unless ``all_turns``; the content hash covers
exactly the turns decoded.

Hub sources (dataset id, config, split → field):

==============  =============================================================  ==================
gsm8k           openai/gsm8k, main, test                                       question
math500         HuggingFaceH4/MATH-500, test                                   problem
aime24          HuggingFaceH4/aime_2024, train                                 problem
aime25          MathArena/aime_2025, train                                     problem
humaneval       openai/openai_humaneval, test                                  prompt
mbpp            google-research-datasets/mbpp, sanitized, test                 prompt
livecodebench   livecodebench/code_generation_lite (release_v6), test          question_content
lbpp            CohereLabs/lbpp, test                                          instruction
mt-bench        HuggingFaceH4/mt_bench_prompts, train                          prompt (2 turns)
alpaca          tatsu-lab/alpaca, train                                        instruction + input
arena-hard-v2   lmarena-ai/arena-hard-auto, data/arena-hard-v2.0/question.jsonl  prompt
==============  =============================================================  ==================
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deepspec_core.errors import DataError
from deepspec_core.registry import Registry

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
HUMANEVAL_PREFIX = (
    "Write a solution to the following problem and make sure that it passes the tests:\n```python\n"
)
LCB_PREFIX = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will "
    "generate a correct Python program that matches the specification and passes all tests. You will NOT "
    "return anything except for the program\n\n### Question:\n"
)
LCB_ANSWER = "\n```\n\n### Answer: (use the provided format with backticks)"

Domain = Literal["math", "code", "chat"]


@dataclass(frozen=True)
class HubSource:
    dataset: str
    split: str
    config: str | None = None
    data_files: str | None = None  # for repositories that are plain files rather than a dataset script

    def describe(self) -> str:
        parts = [self.dataset, self.config, self.data_files, self.split]
        return ":".join(p for p in parts if p)


@dataclass(frozen=True)
class Benchmark:
    name: str
    domain: Domain
    num_samples: int  # the reference's default sample count
    source: HubSource
    format_row: Callable[[dict[str, Any]], list[str]] = field(repr=False)  # hub row → turns


@dataclass
class BenchmarkPrompts:
    """The prompts of one benchmark as evaluated: turns per sample, where they came from, a hash."""

    name: str
    domain: Domain
    turns: list[list[str]]
    source: str  # the file read or the hub source fetched
    total: int  # prompts available before subsetting
    content_hash: str  # sha256 of the evaluated turns: two runs with equal hashes saw the same prompts

    def __len__(self) -> int:
        return len(self.turns)


# -- prompt wording (matches the reference's prompt files) ------------------------------------


def _math(key: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda row: [str(row[key]).strip() + MATH_SUFFIX]


def _humaneval(row: dict[str, Any]) -> list[str]:
    return [HUMANEVAL_PREFIX + row["prompt"] + "\n```"]


def _livecodebench(row: dict[str, Any]) -> list[str]:
    starter = (row.get("starter_code") or "").strip("\n")
    if starter:
        fmt = "### Format: Use the following code structure:\n```python\n" + row["starter_code"]
    else:
        fmt = "### Format: Write your code in the following format:\n```python\n# YOUR CODE HERE"
    return [LCB_PREFIX + row["question_content"] + "\n\n" + fmt + LCB_ANSWER]


def _alpaca(row: dict[str, Any]) -> list[str]:
    extra = (row.get("input") or "").strip()
    return [row["instruction"] + (f"\n\n{extra}" if extra else "")]


def _field(key: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda row: [str(row[key])]


def _mt_bench(row: dict[str, Any]) -> list[str]:
    return [str(t) for t in row["prompt"]]


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
for _b in (
    Benchmark("gsm8k", "math", 500, HubSource("openai/gsm8k", "test", "main"), _math("question")),
    Benchmark("math500", "math", 500, HubSource("HuggingFaceH4/MATH-500", "test"), _math("problem")),
    Benchmark("aime24", "math", 30, HubSource("HuggingFaceH4/aime_2024", "train"), _math("problem")),
    Benchmark("aime25", "math", 30, HubSource("MathArena/aime_2025", "train"), _math("problem")),
    Benchmark("humaneval", "code", 164, HubSource("openai/openai_humaneval", "test"), _humaneval),
    Benchmark(
        "mbpp", "code", 256, HubSource("google-research-datasets/mbpp", "test", "sanitized"), _field("prompt")
    ),
    Benchmark(
        "livecodebench",
        "code",
        500,
        HubSource("livecodebench/code_generation_lite", "test", "release_v6"),
        _livecodebench,
    ),
    Benchmark("lbpp", "code", 162, HubSource("CohereLabs/lbpp", "test"), _field("instruction")),
    Benchmark("mt-bench", "chat", 80, HubSource("HuggingFaceH4/mt_bench_prompts", "train"), _mt_bench),
    Benchmark("alpaca", "chat", 500, HubSource("tatsu-lab/alpaca", "train"), _alpaca),
    Benchmark(
        "arena-hard-v2",
        "chat",
        500,
        HubSource("lmarena-ai/arena-hard-auto", "train", data_files="data/arena-hard-v2.0/question.jsonl"),
        _field("prompt"),
    ),
):
    BENCHMARKS.add(_b.name, _b)

REFERENCE_NINE = [
    "gsm8k",
    "math500",
    "aime25",
    "humaneval",
    "mbpp",
    "livecodebench",
    "mt-bench",
    "alpaca",
    "arena-hard-v2",
]


def get_benchmark(name: str) -> Benchmark:
    return BENCHMARKS.get(name)


def domain_of(name: str) -> Domain:
    return BENCHMARKS.get(name).domain


# -- loading -----------------------------------------------------------------------------------


def read_turns_file(path: Path) -> list[list[str]]:
    """``{"turns": [...]}`` per line → turns per sample; names the line of a malformed row."""
    out: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}:{lineno} is not valid JSON: {err.msg}", 'each line must be {"turns": [...]}'
                ) from err
            turns = row.get("turns") if isinstance(row, dict) else None
            if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
                raise DataError(
                    f"{path}:{lineno} has no list of strings under 'turns'",
                    'each line must be {"turns": ["..."]}',
                )
            out.append(turns)
    if not out:
        raise DataError(f"{path} holds no prompts", 'each line must be {"turns": ["..."]}')
    return out


def fetch_turns(bench: Benchmark) -> list[list[str]]:
    """Download the benchmark's hub source and word its prompts like the reference files (needs network)."""
    from deepspec_core.hub import hub_reachable

    src = bench.source
    if not hub_reachable():
        raise DataError(
            f"cannot fetch benchmark {bench.name} ({src.describe()}): the Hugging Face hub is unreachable",
            f'pass --data-dir with a {bench.name}.jsonl of {{"turns": [...]}} lines (`--data-dir packaged` has '
            "gsm8k, math500, humaneval, mbpp, lbpp, mt-bench)",
        )
    try:
        import datasets

        if src.data_files:
            ds = datasets.load_dataset(src.dataset, data_files=src.data_files, split=src.split)
        else:
            ds = datasets.load_dataset(src.dataset, src.config, split=src.split)
    except Exception as err:  # datasets raises many types for offline / missing / gated sources
        raise DataError(
            f"cannot fetch benchmark {bench.name} from the hub ({src.describe()}): {type(err).__name__}: {err}",
            f'pass --data-dir with a {bench.name}.jsonl of {{"turns": [...]}} lines (`--data-dir packaged` has '
            "gsm8k, math500, humaneval, mbpp, lbpp, mt-bench), or check network access",
        ) from err
    return [bench.format_row(row) for row in ds]


def content_hash(turns: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode()).hexdigest()[:16]


SUBSET_SEED = 980406  # the reference's evaluation seed, which also draws its subsets


def select(n_total: int, n: int, seed: int = SUBSET_SEED) -> list[int]:
    """Row indices the reference evaluates: all rows in file order when n ≥ total, else the first n
    of ``random.Random(seed).shuffle`` of the rows, in shuffled order."""
    if n >= n_total:
        return list(range(n_total))
    order = list(range(n_total))
    random.Random(seed).shuffle(order)
    return order[:n]


def packaged_prompts_dir() -> Path:
    """Prompt files shipped inside the package (offline; see the module docstring for which)."""
    from importlib.resources import files

    return Path(str(files("deepspec_core") / "assets" / "eval_prompts"))


def load_benchmark(
    name: str,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    all_turns: bool = False,
    subset_seed: int = SUBSET_SEED,
) -> BenchmarkPrompts:
    """The prompts of benchmark ``name``: from ``data_dir/<name>.jsonl`` if present, else the hub.

    Raises DataError for a missing directory, a malformed file or an unreachable hub source."""
    bench = get_benchmark(name)
    if str(data_dir) == "packaged":
        data_dir = packaged_prompts_dir()
    path = Path(data_dir).expanduser() / f"{name}.jsonl" if data_dir else None
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise DataError(
            f"--data-dir {data_dir} is not a directory", "give the directory holding <benchmark>.jsonl files"
        )
    if path is not None and path.is_file():
        rows, source = read_turns_file(path), str(path)
    else:
        try:
            rows, source = fetch_turns(bench), f"hub:{bench.source.describe()}"
        except DataError as err:  # say first what the user's own directory lacks
            if path is None:
                raise
            raise DataError(f"--data-dir {data_dir} has no {name}.jsonl, and {err.message}", err.hint) from err
    idx = select(len(rows), bench.num_samples, subset_seed)
    if limit is not None:
        idx = idx[:limit]
    turns = [rows[i] if all_turns else rows[i][:1] for i in idx]
    return BenchmarkPrompts(name, bench.domain, turns, source, len(rows), content_hash(turns))


def parse_benchmarks(spec: str | list[str] | None) -> list[str]:
    """'gsm8k,mbpp' (or a list) → validated names; None or 'all' → the reference's nine."""
    if spec is None:
        return list(REFERENCE_NINE)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return list(REFERENCE_NINE)
    for n in names:
        BENCHMARKS.get(n)
    if not names:
        raise DataError("no benchmarks given", f"choose from: {', '.join(BENCHMARKS.names())}")
    return names
