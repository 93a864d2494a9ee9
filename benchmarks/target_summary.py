"""What the cache's target summary buys: training tokens/s on a format-2 cache (the target's logsumexp
and argmax stored per position) against the baseline, a format-1 cache of the same features (every
step multiplies the full target head), and what storing it costs when the cache is built.

Both caches are built here from the same spec and data. Each algorithm then trains the same steps
(the same batches) on each cache, alternating the two (a CPU's speed drifts within minutes), and
the table gives the median tokens/s of the training loop and their ratio. Run it where the spec's
relative paths resolve, e.g. for SmolLM2:

    cd examples/smollm2 && python ../../benchmarks/target_summary.py dspark.toml eagle3.toml dflash.toml \\
        --data work/data/train.regen.jsonl --work /tmp/summary-bench --steps 6
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def _build(spec_path: str, sets: list[str], out: Path, summary: bool) -> float:
    """Build the cache at ``out`` (format 2 with the summary, else format 1); → seconds, NaN if it existed."""
    from deepspec_core.cache import format as fmt
    from deepspec_core.cache.writer import build_cache
    from deepspec_core.spec import load_spec

    if (out / fmt.MANIFEST).is_file():
        return float("nan")
    t0 = time.perf_counter()
    build_cache(load_spec(spec_path, [*sets, f"cache.path='{out}'"]), progress=False, target_summary=summary)
    return time.perf_counter() - t0


def _train_tokens_per_s(spec_path: str, sets: list[str], cache: Path, root: Path, steps: int) -> float:
    """Tokens/s of the training loop (setup and validation excluded) over ``steps`` steps."""
    from deepspec_core.spec import load_spec
    from deepspec_core.train.loop import Runtime, train

    spec = load_spec(spec_path, [
        *sets, f"cache.path='{cache}'", f"output.root='{root}'", f"train.max_steps={steps}",
        f"train.save_every={steps}", f"train.log_every={steps}", "train.val_samples=0", "train.tensorboard=false",
    ])
    return train(spec, Runtime(fresh=True, progress=False, say=lambda _m: None)).train_tokens_per_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", help="run spec files (one per algorithm); the first one builds the caches")
    p.add_argument("--data", required=True, help="training conversations (data.train of every spec)")
    p.add_argument("--work", required=True, help="directory for the two caches and the runs")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per measurement")
    p.add_argument("--repeats", type=int, default=2, help="measurements per cache and algorithm, alternating")
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra spec overrides (KEY=VALUE)")
    args = p.parse_args()

    from rich.console import Console
    from rich.table import Table

    work = Path(args.work)
    sets = [f"data.train=['{args.data}']", "data.eval=[]", *args.sets]
    caches = {"format 1": work / "cache-format1", "format 2": work / "cache-format2"}
    build_s = {name: _build(args.specs[0], sets, path, name == "format 2") for name, path in caches.items()}
    rows = []
    for spec_path in args.specs:
        times: dict[str, list[float]] = {name: [] for name in caches}
        for r in range(args.repeats):
            for name, path in caches.items() if r % 2 == 0 else reversed(caches.items()):
                times[name].append(_train_tokens_per_s(spec_path, sets, path, work / "runs" / name, args.steps))
        rows.append((spec_path, {k: statistics.median(v) for k, v in times.items()}))
    table = Table(title=f"training tokens/s (median), {args.steps} steps × {args.repeats} alternating runs per cache")
    for col in ("spec", "format 1 (baseline)", "format 2", "speedup"):
        table.add_column(col, justify="left" if col == "spec" else "right")
    for spec_path, t in rows:
        table.add_row(spec_path, f"{t['format 1']:,.0f}", f"{t['format 2']:,.0f}", f"{t['format 2'] / t['format 1']:.2f}×")
    Console().print(table)
    if all(s == s for s in build_s.values()):  # both built in this run
        Console().print(f"cache build: format 1 {build_s['format 1']:.0f} s, format 2 {build_s['format 2']:.0f} s "
                        f"({build_s['format 2'] / build_s['format 1']:.2f}×)")


if __name__ == "__main__":
    main()
