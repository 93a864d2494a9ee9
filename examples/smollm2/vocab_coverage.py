"""How much of what the target writes a reduced draft vocabulary can propose.

A token outside the draft vocabulary is never drafted, so where the target produces one the
accepted run ends: the coverage below bounds the per-token acceptance rate. It reads the draft
vocabulary mask (``t2d``) from a checkpoint and the target's greedy outputs that
``deepspec eval --save-outputs`` wrote.

    python vocab_coverage.py work/runs/smollm2/dspark/step_latest work/eval/T0.0/dspark/outputs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="draft checkpoint directory (holds model.safetensors)")
    ap.add_argument("outputs", type=Path, help="directory of <benchmark>.jsonl files from eval --save-outputs")
    args = ap.parse_args()
    if (args.checkpoint / "step_latest").is_dir():  # a run directory: its latest checkpoint
        args.checkpoint = args.checkpoint / "step_latest"
    if not (args.checkpoint / "model.safetensors").is_file():
        raise SystemExit(f"{args.checkpoint} holds no model.safetensors: give a run directory or its step_<N> directory")
    if not args.outputs.is_dir():
        raise SystemExit(f"{args.outputs} is not a directory: run `deepspec eval --save-outputs` and give its outputs/")
    with safe_open(str(args.checkpoint / "model.safetensors"), framework="pt") as f:
        if "t2d" not in f.keys():
            raise SystemExit(f"{args.checkpoint} uses the full vocabulary: every token can be drafted")
        t2d = f.get_tensor("t2d")
    print(f"draft vocabulary: {int(t2d.sum())} of {t2d.numel()} target tokens")
    total_in = total = 0
    for path in sorted(args.outputs.glob("*.jsonl")):
        ids = [i for line in path.read_text().splitlines() for i in json.loads(line)["generated_ids"]]
        inside = int(t2d[ids].sum()) if ids else 0
        total_in, total = total_in + inside, total + len(ids)
        print(f"{path.stem:<12} {inside / max(1, len(ids)):7.2%} of {len(ids)} generated tokens")
    print(f"{'all':<12} {total_in / max(1, total):7.2%} of {total} generated tokens")


if __name__ == "__main__":
    main()
