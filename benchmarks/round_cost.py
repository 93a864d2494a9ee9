"""Where a speculative decoding round's time goes, in target-only decoding steps.

Usage: python benchmarks/round_cost.py RUN_DIR [RUN_DIR ...] [--k 5] [--tokens 48] [--prompts 1]
                                        [--repeats 2] [--kernels packed,plain] [--target DIR]

For each draft and each kernel choice — ``packed``: the fp32 linear layers of both models computed
through oneDNN-packed weights, what ``deepspec eval`` does on a CPU; ``plain``: ``F.linear``, with
:class:`~deepspec_core.decode.cpu_linear.FewRowLinear` for verification, what it did before — the
first ``--prompts`` packaged prompts of gsm8k, humaneval and mt-bench are decoded greedily by the
target alone (the baseline: seconds per token) and speculatively, alternately, ``--repeats`` times
(so that a machine whose speed drifts slows both alike). Each part of a round is timed: the
target's verification forward (k + 1 tokens through the layers), its lm_head, the verification
rule, the KV-cache crop, the draft's propose and commit, and the rest ("other": Python, lists).
Every part is reported in ms per round and in target steps (ms ÷ the baseline's ms per token), so
the parts add up to the round cost that ``deepspec eval --speed`` reports. CPU wall clock.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch

from deepspec_core.decode import cpu_linear
from deepspec_core.decode import speculative as sp
from deepspec_core.eval.benchmarks import load_benchmark
from deepspec_core.eval.loading import encode_prompt, eos_token_ids, load_draft

BENCHMARKS = ("gsm8k", "humaneval", "mt-bench")
PARTS = {"capture_features": "target forward", "lm_logits": "target lm_head", "crop_cache": "cache crop"}


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0

        return timed


def prompts(tok: Any, n: int, device: torch.device) -> list[torch.Tensor]:
    out = []
    for name in BENCHMARKS:
        bench = load_benchmark(name, data_dir="packaged", limit=n)
        out += [encode_prompt(tok, [{"role": "user", "content": t[0]}], False, device) for t in bench.turns]
    return out


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def profile(run_dir: str, kernels: str, a: argparse.Namespace) -> dict[str, float]:
    """Decode and time; returns ms per round of each part, the baseline step and τ."""
    with mock.patch.object(cpu_linear, "packing_available", lambda: kernels == "packed"):
        loaded = load_draft(run_dir, target=a.target, device="cpu", draft_dtype=a.draft_dtype)
    model, draft, k = loaded.target.model, loaded.draft, a.k
    eos = eos_token_ids(model, loaded.target.tokenizer)
    ids = prompts(loaded.target.tokenizer, a.prompts, loaded.target.device)
    sp.speculative_generate(model, draft, ids[0], k, 8, 0.0, None, eos)  # warm-up of both paths
    sp.target_generate(model, ids[0], 8)

    timers = Timers()
    base_s = spec_s = prefill_s = 0.0
    base_tok = spec_tok = rounds = 0
    propose, commit = draft.propose, draft.commit
    verify = timers.wrap("verify rule", sp.verify)
    for _ in range(a.repeats):
        for x in ids:
            gen, s = timed(sp.target_generate, model, x, a.tokens)
            base_s, base_tok = base_s + s, base_tok + len(gen.tokens)
            # The prefill (prompt forward, first token) is not part of a round: max_new_tokens = 1
            # stops before any round, so this times it alone.
            prefill_s += timed(sp.speculative_generate, model, draft, x, k, 1, 0.0, None, eos)[1]
            with mock.patch.multiple(sp, **{n: timers.wrap(PARTS[n], getattr(sp, n)) for n in PARTS}):
                draft.propose, draft.commit = timers.wrap("draft propose", propose), timers.wrap("draft commit", commit)
                try:
                    gen, s = timed(sp.speculative_generate, model, draft, x, k, a.tokens, 0.0, None, eos,
                                   verify_fn=verify)
                finally:
                    draft.propose, draft.commit = propose, commit
            spec_s, spec_tok, rounds = spec_s + s, spec_tok + len(gen.tokens), rounds + gen.rounds
    parts = {name: s / rounds for name, s in timers.seconds.items()}
    parts["target forward"] -= prefill_s / rounds  # the wrapped runs' prefill forward is not a round's
    round_s = (spec_s - prefill_s) / rounds
    parts["other"] = round_s - sum(parts.values())
    step = base_s / base_tok
    print(f"\n{loaded.spec.draft.algo} ({run_dir}), {kernels} kernels, k = {k}, {len(ids)} prompts × "
          f"{a.tokens} tokens × {a.repeats}, draft {str(draft.param_dtype).removeprefix('torch.')}")
    print(f"  target-only step {step * 1e3:.1f} ms ({base_tok} tokens); {rounds} rounds, τ {spec_tok / rounds:.2f}")
    for name, s in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<16} {s * 1e3:7.1f} ms  {s / step:5.2f} steps")
    print(f"  {'round':<16} {round_s * 1e3:7.1f} ms  {round_s / step:5.2f} steps "
          f"(this τ would give {spec_tok / rounds / (round_s / step):.2f}×)")
    return {"step_ms": step * 1e3, "round_steps": round_s / step, "tau": spec_tok / rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("runs", nargs="+", help="draft run directories or checkpoints")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=1, help="prompts per benchmark")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kernels", default="packed,plain", help="packed, plain, or both (comma-separated)")
    ap.add_argument("--target", default=None)
    ap.add_argument("--draft-dtype", default="auto")
    a = ap.parse_args()
    summary = []
    with torch.no_grad():
        for run in a.runs:
            for kernels in a.kernels.split(","):
                r = profile(run, kernels, a)
                summary.append((run, kernels, r))
    print("\nrun, kernels: target step ms, round cost in target steps")
    for run, kernels, r in summary:
        print(f"  {run}, {kernels}: {r['step_ms']:.1f} ms, {r['round_steps']:.2f}")


if __name__ == "__main__":
    main()
