"""Turn held-out training prompts into an evaluation prompt directory, one file per domain.

How much of the gap between a draft's validation τ and its benchmark τ comes from the prompts?
Decode the draft on prompts it never trained on but of its own training kinds, exactly as the
benchmarks are decoded. ``deepspec eval --data-dir`` reads ``<benchmark>.jsonl`` files of
``{"turns": [...]}``, so each domain's held-out prompts are written under the name of a benchmark
of that domain: math → gsm8k.jsonl, code → humaneval.jsonl, chat → mt-bench.jsonl. The τ table's
rows then name the *domain's stand-in*, not the benchmark (docs/results-smollm2.md, sixth sitting).

    python heldout_prompts.py work/data/train.heldout.jsonl --out work/heldout-prompts --n 20
    deepspec eval --draft work/runs/smollm2/dspark --temperature 0 --data-dir work/heldout-prompts \\
        --benchmarks gsm8k,humaneval,mt-bench --limit 20 --out work/eval/heldout-T0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepspec_core.data.conversations import read_conversations
from deepspec_core.errors import DataError

STAND_IN = {"math": "gsm8k", "code": "humaneval", "chat": "mt-bench"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prompts", type=Path, help="held-out prompts: make_prompts.py rows (messages, meta.domain)")
    ap.add_argument("--out", type=Path, required=True, help="directory for <benchmark>.jsonl files")
    ap.add_argument("--n", type=int, default=20, help="prompts per domain (the first n in file order)")
    args = ap.parse_args()
    if not args.prompts.is_file():
        raise SystemExit(f"{args.prompts} is not a file: give make_prompts.py's held-out split, e.g. work/data/train.heldout.jsonl")
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"--out {args.out} is a file: give a directory (it is created if missing)")
    if args.n < 1:
        raise SystemExit(f"--n {args.n}: ask for at least one prompt per domain")
    by_domain: dict[str, list[str]] = {d: [] for d in STAND_IN}
    try:  # the project's reader: it validates each row and names the line at fault
        for i, row in enumerate(read_conversations(args.prompts), 1):
            domain = row.get("meta", {}).get("domain")
            if domain not in STAND_IN:
                raise SystemExit(f"{args.prompts}: row {i}: meta.domain is {domain!r}; expected one of {sorted(STAND_IN)}")
            users = [m["content"] for m in row["messages"] if m["role"] == "user"]
            if len(by_domain[domain]) < args.n and users:
                by_domain[domain].append(users[0])
    except DataError as err:
        raise SystemExit(err.message) from None
    args.out.mkdir(parents=True, exist_ok=True)
    for domain, turns in by_domain.items():
        if not turns:
            raise SystemExit(f"{args.prompts} has no {domain} prompt; make_prompts.py writes all three domains")
        path = args.out / f"{STAND_IN[domain]}.jsonl"
        path.write_text("".join(json.dumps({"turns": [t]}) + "\n" for t in turns), encoding="utf-8")
        print(f"{domain:<5} {len(turns):4d} prompts → {path}")


if __name__ == "__main__":
    main()
