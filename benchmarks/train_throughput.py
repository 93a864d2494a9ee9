"""Training throughput: tokens/s, GFLOP per step and peak memory per algorithm, offline feature cache
vs online features.

Each (algorithm, feature source) runs in its own process, so peak memory is that configuration's
alone (peak RSS on CPU, peak allocated CUDA memory on GPU). Baseline: the offline cache of the same
data; the ratio column is online / offline tokens/s measured in this run. GFLOP per optimizer step
are counted by torch's FlopCounterMode on one step of the same shapes (forward and backward of the
draft, plus the target's forward when features are online).

    python benchmarks/train_throughput.py                      # tiny-quick target, stdlib chats
    python benchmarks/train_throughput.py --target tiny --steps 30 --algos dspark
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from deepspec_core.spec import algorithms

ALGOS = algorithms()


def _chats(path: Path, limit: int) -> None:
    """Docstring → function conversations from the stdlib (what the tiny target was trained on)."""
    from deepspec_core.targets import tiny_data as td

    root = td.stdlib_root()
    convs = []
    for src in td.read_sources(td.stdlib_files(root)[:400], root):
        if not td.is_heldout(src.relpath):
            convs += td.chat_pairs(src, max_answer_chars=800)
        if len(convs) >= limit:
            break
    path.write_text("".join(json.dumps(c) + "\n" for c in convs[:limit]))


def _sets(args: argparse.Namespace, work: Path, algo: str, online: bool) -> list[str]:
    return [
        f"target.model='{args.target}'",
        f"data.train=['{work / 'chats.jsonl'}']",
        f"data.max_length={args.max_length}",
        f"cache.path='{work / 'cache'}'",
        f"cache.online={'true' if online else 'false'}",
        f"output.root='{work / 'runs'}'",
        f"name='{algo}-{'online' if online else 'offline'}'",
        f"train.max_steps={args.steps}",
        f"train.micro_batch_size={args.micro_batch}",
        f"train.global_batch_size={args.micro_batch}",
        f"train.log_every={args.steps}",
        f"train.save_every={args.steps}",
        f"train.val_every={args.steps}",
        "train.val_samples=0",
        "train.tensorboard=false",
        f"train.num_workers={0 if online else args.workers}",
    ]


def _one(args: argparse.Namespace) -> None:
    """Child process: train one configuration and print one JSON line."""
    import torch

    from deepspec_core.spec import load_spec
    from deepspec_core.train.loop import Runtime, train

    spec = load_spec(f"tiny-{args.algo}", _sets(args, Path(args.work), args.algo, args.mode == "online"))
    result = train(spec, Runtime(fresh=True, progress=False, say=lambda m: None))
    gflop = _step_gflop(spec, args.micro_batch)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"algo": args.algo, "mode": args.mode, "tokens_per_s": result.train_tokens_per_s,
                      "gflop_per_step": gflop, "peak_mib": peak, "device": "cuda" if torch.cuda.is_available() else "cpu"}))


def _step_gflop(spec, micro_batch: int) -> float:
    """FLOPs of one optimizer step (global = micro batch here): the batch (the target's forward when
    online), the draft's forward and backward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from deepspec_core.train.data import build_parts

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = build_parts(spec, device, lambda m: None)
    torch.manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        batch = parts.val_batch([i - parts.num_train for i in range(micro_batch)]).to(device)  # training samples 0..
        parts.draft.forward_train(batch).loss.backward()
    return counter.get_total_flops() / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="tiny-quick", help="target model ('tiny', 'tiny-quick' or a directory)")
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per configuration")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--samples", type=int, default=400, help="conversations in the benchmark data")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers for the offline cache")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--algo", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.algo:
        return _one(args)

    from rich.console import Console
    from rich.table import Table

    from deepspec_core.cache.writer import build_cache
    from deepspec_core.spec import load_spec

    work = Path(args.work or tempfile.mkdtemp(prefix="deepspec-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "chats.jsonl").is_file():
        _chats(work / "chats.jsonl", args.samples)
    if not (work / "cache" / "manifest.json").is_file():
        build_cache(load_spec("tiny-dflash", _sets(args, work, "dflash", online=False)))
    rows = []
    for algo in args.algos:
        for mode in ("offline", "online"):
            cmd = [sys.executable, __file__, "--algo", algo, "--mode", mode, "--work", str(work),
                   "--target", args.target, "--steps", str(args.steps), "--micro-batch", str(args.micro_batch),
                   "--max-length", str(args.max_length), "--workers", str(args.workers)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    table = Table(title=f"train throughput — target {args.target}, {args.steps} steps × {args.micro_batch} seqs "
                        f"≤ {args.max_length} tokens, device {rows[0]['device']}")
    for col in ("algo", "features", "tokens/s", "GFLOP/step", "peak MiB", "online / offline"):
        table.add_column(col, justify="right" if col != "algo" else "left")
    for algo in args.algos:
        off, on = (next(r for r in rows if r["algo"] == algo and r["mode"] == m) for m in ("offline", "online"))
        table.add_row(algo, "offline cache", f"{off['tokens_per_s']:,.0f}", f"{off['gflop_per_step']:.2f}",
                      f"{off['peak_mib']:,.0f}", "1.00×")
        table.add_row("", "online target", f"{on['tokens_per_s']:,.0f}", f"{on['gflop_per_step']:.2f}",
                      f"{on['peak_mib']:,.0f}", f"{on['tokens_per_s'] / off['tokens_per_s']:.2f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
