"""Where a speculative decoding round's time goes, in target-only decoding steps.

Usage: python benchmarks/round_cost.py RUN_DIR [RUN_DIR ...] [--k 5] [--tokens 48] [--prompts 1]
                                        [--repeats 2] [--variants packed:auto,plain:float32] [--target DIR]

Each variant is a way of decoding: KERNELS ``packed`` (the fp32 linear layers of both models
through oneDNN-packed weights, what ``deepspec eval`` does on a CPU) or ``plain`` (``F.linear``,
with :class:`~deepspec_core.decode.cpu_linear.FewRowLinear` for verification), and the draft's
dtype (``auto`` as ``deepspec eval --draft-dtype``). The default compares today's decoding with
the plain-kernel, fp32-draft decoding it replaced. The first ``--prompts`` packaged prompts of
gsm8k, humaneval and mt-bench are decoded greedily by the target alone (the baseline: seconds per
token) and speculatively, every variant in turn prompt by prompt, ``--repeats`` times, so that a
machine whose speed drifts slows all variants alike. Each part of a round is timed: the target's
verification forward (k + 1 tokens through the layers), its lm_head, the verification rule, the
KV-cache crop, the draft's propose and commit, and the rest ("other": Python, lists). Every part
is reported in ms per round and in target steps (ms ÷ the baseline's ms per step). The prefill
(prompt forward, first token) is timed apart and left out of both the round and the step; ``deepspec
eval --speed`` keeps it in both timings, so on short generations its round cost reads a little
higher than this one. CPU wall clock.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
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
        def timed_part(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0

        return timed_part


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


@dataclass
class Variant:
    """One way of decoding (kernels × draft dtype) of one draft, and what its decoding took."""

    kernels: str
    loaded: Any
    eos: list[int]
    timers: Timers = field(default_factory=Timers)
    base_s: float = 0.0
    spec_s: float = 0.0
    prefill_s: float = 0.0
    prompts: int = 0
    base_tok: int = 0
    spec_tok: int = 0
    rounds: int = 0

    @property
    def label(self) -> str:
        return f"{self.kernels} kernels, {str(self.loaded.draft.param_dtype).removeprefix('torch.')} draft"


def load_variant(run_dir: str, kernels: str, draft_dtype: str, target: str | None) -> Variant:
    with mock.patch.object(cpu_linear, "packing_available", lambda: kernels == "packed"):
        loaded = load_draft(run_dir, target=target, device="cpu", draft_dtype=draft_dtype)
    return Variant(kernels, loaded, eos_token_ids(loaded.target.model, loaded.target.tokenizer))


def decode(v: Variant, x: torch.Tensor, k: int, tokens: int) -> None:
    """Prompt ``x`` by the target alone, then its prefill alone, then speculatively with each part timed."""
    model, draft, t = v.loaded.target.model, v.loaded.draft, v.timers
    gen, s = timed(sp.target_generate, model, x, tokens)
    v.base_s, v.base_tok = v.base_s + s, v.base_tok + len(gen.tokens)
    # The prefill (prompt forward, first token) is not part of a round: max_new_tokens = 1 stops
    # before any round, so this times it alone.
    v.prefill_s += timed(sp.speculative_generate, model, draft, x, k, 1, 0.0, None, v.eos)[1]
    v.prompts += 1
    propose, commit = draft.propose, draft.commit
    with mock.patch.multiple(sp, **{n: t.wrap(PARTS[n], getattr(sp, n)) for n in PARTS}):
        draft.propose, draft.commit = t.wrap("draft propose", propose), t.wrap("draft commit", commit)
        try:
            gen, s = timed(sp.speculative_generate, model, draft, x, k, tokens, 0.0, None, v.eos,
                           verify_fn=t.wrap("verify rule", sp.verify))
        finally:
            draft.propose, draft.commit = propose, commit
    v.spec_s, v.spec_tok, v.rounds = v.spec_s + s, v.spec_tok + len(gen.tokens), v.rounds + gen.rounds


def report(run: str, v: Variant, a: argparse.Namespace, n_prompts: int) -> float:
    """Print the parts of a round in ms and target steps; return the round cost in target steps."""
    parts = {name: s / v.rounds for name, s in v.timers.seconds.items()}
    # The prefill is no round's: its forward (and the first token's 1-row lm_head, a few ms per
    # prompt) leave "target forward", and the whole of it leaves the round and the baseline step.
    parts["target forward"] -= v.prefill_s / v.rounds
    round_s = (v.spec_s - v.prefill_s) / v.rounds
    parts["other"] = round_s - sum(parts.values())
    # Target-only: the prefill yields each prompt's first token, every later token costs one step.
    step, tau = (v.base_s - v.prefill_s) / (v.base_tok - v.prompts), v.spec_tok / v.rounds
    print(f"\n{v.loaded.spec.draft.algo} ({run}), {v.label}, k = {a.k}, {n_prompts} prompts × {a.tokens} tokens × {a.repeats}")
    print(f"  target-only step {step * 1e3:.1f} ms ({v.base_tok} tokens); {v.rounds} rounds, τ {tau:.2f}")
    for name, s in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<16} {s * 1e3:7.1f} ms  {s / step:5.2f} steps")
    print(f"  {'round':<16} {round_s * 1e3:7.1f} ms  {round_s / step:5.2f} steps (this τ would give {tau / (round_s / step):.2f}×)")
    return round_s / step


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("runs", nargs="+", help="draft run directories or checkpoints")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=1, help="prompts per benchmark")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default="packed:auto,plain:float32",
                    help="KERNELS:DRAFT_DTYPE,... with KERNELS packed or plain (default: today's decoding, then "
                         "the plain-F.linear fp32-draft decoding it replaced)")
    ap.add_argument("--target", default=None)
    a = ap.parse_args()
    configs = [tuple(c.split(":")) for c in a.variants.split(",")]
    summary = []
    with torch.no_grad():
        for run in a.runs:
            variants = [load_variant(run, kernels, dtype, a.target) for kernels, dtype in configs]
            ids = prompts(variants[0].loaded.target.tokenizer, a.prompts, variants[0].loaded.target.device)
            for v in variants:  # warm-up of both paths of every variant
                sp.speculative_generate(v.loaded.target.model, v.loaded.draft, ids[0], a.k, 8, 0.0, None, v.eos)
                sp.target_generate(v.loaded.target.model, ids[0], 8)
            # Variants alternate prompt by prompt: a machine whose speed drifts slows them alike.
            for _ in range(a.repeats):
                for x in ids:
                    for v in variants:
                        decode(v, x, a.k, a.tokens)
            summary += [(run, v, report(run, v, a, len(ids))) for v in variants]
    print("\nrun, variant: target-only step, round cost in target steps")
    for run, v, cost in summary:
        print(f"  {run}, {v.label}: {v.base_s / v.base_tok * 1e3:.1f} ms, {cost:.2f}")


if __name__ == "__main__":
    main()
