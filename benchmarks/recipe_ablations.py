"""Recipe choices decided by measurement: train each variant at equal budget, evaluate τ on the same
prompts, report Δτ against the reference's choice.

Ablations (``--what``):
  * ``eagle3-loss``  Eagle3 ``draft.loss_convention``: ``reference`` (DeepSpec/SpecForge: step i at t
                     counts where loss_mask[t+i], divided by B·T) vs ``valid_rows`` (rows whose predicted
                     tokens are supervised, averaged over them). Trained on a lossless bf16 cache.
  * ``codec``        the feature-cache codec a block drafter trains on: ``bf16-zstd`` (lossless, the
                     reference stores bf16) vs ``fp8-zstd`` (per-row scaled fp8 for the captured layers).
                     Also reports bytes/token of each cache.

Every variant shares the base spec (``--eagle3-spec`` / ``--block-spec``, presets or TOML files) and the
``--set`` overrides, differing only in the ablated field, its run name and its cache path; every
``--seeds`` seed trains each variant once (τ reported as mean and spread over seeds). Runs and caches
are written under ``--out`` and reused when rerun.

    python benchmarks/recipe_ablations.py --out work/ablations --set target.model='"DIR"' \\
        --set 'data.train=["train.regen.jsonl"]' --steps 300 --batch 16 --data-dir packaged \\
        --benchmarks humaneval,mbpp --eval-limit 16 --max-new-tokens 96
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

VARIANTS = {
    "eagle3-loss": ("draft.loss_convention", ["reference", "valid_rows"]),
    "codec": ("cache.codec", ["bf16-zstd", "fp8-zstd"]),
}


def run_variant(args: argparse.Namespace, what: str, value: str, seed: int) -> dict:
    from deepspec_core.cache.writer import build_cache
    from deepspec_core.eval.runner import evaluate
    from deepspec_core.spec import load_spec
    from deepspec_core.train.loop import Runtime, train

    field, _ = VARIANTS[what]
    base = args.eagle3_spec if what == "eagle3-loss" else args.block_spec
    codec = value if what == "codec" else "bf16-zstd"
    name = f"{what}-{value}-seed{seed}"
    spec = load_spec(base, [
        *args.set,
        f"{field}={json.dumps(value)}",
        f"cache.codec={json.dumps(codec)}",
        f"cache.path={json.dumps(str(Path(args.out) / 'cache' / codec))}",
        f"output.root={json.dumps(str(Path(args.out) / 'runs'))}",
        "project='ablations'",
        f"name={json.dumps(name)}",
        f"seed={seed}",
        f"train.max_steps={args.steps}",
        f"train.global_batch_size={args.batch}",
        f"train.save_every={args.steps}",
        f"train.val_every={args.steps}",
        "train.tensorboard=false",
    ])
    manifest_path = Path(spec.cache_dir()) / "manifest.json"
    if not manifest_path.is_file():
        build_cache(spec)
    manifest = json.loads(manifest_path.read_text())
    t0 = time.perf_counter()
    run = train(spec, Runtime(progress=False, say=lambda _m: None))
    train_s = time.perf_counter() - t0
    ev = evaluate(run.run_dir, benchmarks=args.benchmarks, data_dir=args.data_dir, limit=args.eval_limit,
                  max_new_tokens=args.max_new_tokens, temperature=args.temperature, progress=False, plots=False,
                  out_dir=run.run_dir / "eval" / "ablation")
    r = ev.results
    return {
        "what": what, "value": value, "seed": seed, "tau": r.macro.tau,
        "tau_per_benchmark": {b: x.tau for b, x in r.benchmarks.items()},
        "val_tau_expected": (run.val or {}).get("tau_expected"),
        "bytes_per_token": manifest["sizes"]["bytes_per_token"], "train_seconds": round(train_s, 1),
    }


def summarise(rows: list[dict]) -> str:
    lines = ["| ablation | value | τ (mean over seeds) | spread | Δτ vs first | bytes/token | train s (longest) |",
             "|---|---|---|---|---|---|---|"]
    for what, (_, values) in VARIANTS.items():
        base = None
        for value in values:
            taus = [r["tau"] for r in rows if r["what"] == what and r["value"] == value]
            if not taus:
                continue
            mean = statistics.fmean(taus)
            spread = statistics.stdev(taus) if len(taus) > 1 else 0.0
            base = mean if base is None else base
            runs = [r for r in rows if r["what"] == what and r["value"] == value]
            # a rerun reuses finished runs (seconds ≈ 0): the longest is the one that trained here
            lines.append(f"| {what} | {value} | {mean:.3f} | ±{spread:.3f} | {mean / base - 1:+.1%} | "
                         f"{runs[0]['bytes_per_token']:,.0f} | {max(r['train_seconds'] for r in runs):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--what", default="eagle3-loss,codec")
    p.add_argument("--eagle3-spec", default="tiny-eagle3")
    p.add_argument("--block-spec", default="tiny-dspark")
    p.add_argument("--set", action="append", default=[], help="override for every variant (TOML value)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--benchmarks", default="humaneval,mbpp")
    p.add_argument("--data-dir", default="packaged")
    p.add_argument("--eval-limit", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for what in args.what.split(","):
        for seed in range(args.seeds):
            for value in VARIANTS[what][1]:
                rows.append(run_variant(args, what, value, seed))
                print(json.dumps(rows[-1]), flush=True)
    (out / "ablations.json").write_text(json.dumps(rows, indent=1))
    table = summarise(rows)
    (out / "ablations.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
