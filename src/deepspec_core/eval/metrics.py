"""Acceptance statistics and the schema of ``results.json``.

Convention (docs/evaluation.md): a verification round commits L tokens — the accepted drafts plus
the corrected or bonus token, fewer when the output ends inside the round (an accepted EOS: no
bonus after it; ``max_new_tokens``: what was kept) — so 1 ≤ L ≤ k + 1 and τ = mean L pooled over
all rounds of a benchmark (:class:`~deepspec_core.decode.rounds.RoundOutcome`). Per position
j = 1..k, over the rounds that *judged* j (a round cut by EOS or ``max_new_tokens`` judges only
the positions it committed): *unconditional* P(draft j accepted) and *conditional*
P(draft j accepted | drafts 1..j−1 accepted). A ratio with no round behind it is null, never 0;
a benchmark with no rounds has no τ. The macro block averages benchmarks with equal weight.
The pydantic models below ARE the schema: ``EvalResults.model_json_schema()`` prints it and every
results.json this package writes is validated against it before it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from deepspec_core.decode.rounds import RoundOutcome

SCHEMA_VERSION = 3


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchmarkInfo(_Model):
    name: str
    domain: str
    samples: int = Field(ge=0)
    content_hash: str = Field(description="sha256 (16 hex) of the evaluated prompts' turns")
    source: str = Field(description="file read or hub source fetched")


# Marks a protocol field that does not change τ (what is evaluated, where, by which version):
# compare never requires it to match. Every other field does, so a new field is compared by default.
INFORMATIONAL: JsonDict = {"informational": True}


class Protocol(_Model):
    """Everything that changes τ: results with different protocols are not comparable."""

    target: str = Field(description="hub id or resolved directory of the target")
    target_revision: str | None = None
    draft: str = Field(description="checkpoint directory evaluated", json_schema_extra=INFORMATIONAL)
    algorithm: str = Field(json_schema_extra=INFORMATIONAL)
    temperature: float = Field(ge=0)
    max_new_tokens: int = Field(ge=1)
    thinking: bool
    thinking_source: str = Field(
        description="'draft' when taken from the draft's training spec, else 'override'",
        json_schema_extra=INFORMATIONAL,
    )
    chat_template_hash: str
    all_turns: bool = Field(
        description="every user turn decoded (answering the model's own earlier answers); "
        "false: the first user turn only, as the reference"
    )
    subset_seed: int = Field(
        description="seed of random.Random(seed).shuffle(rows) that picks a benchmark's first N prompts"
    )
    draft_params: dict[str, int | float | str | bool] = Field(
        default_factory=dict,
        description="the draft's protocol parameters (block size, TTT length, ...), as its algorithm reports them",
        json_schema_extra=INFORMATIONAL,
    )
    num_draft_tokens: int = Field(ge=1)
    draft_length: str = Field(
        "fixed",
        description="draft-length policy: fixed, threshold or scheduler (shown by compare; it is the choice compared)",
        json_schema_extra=INFORMATIONAL,
    )
    draft_length_threshold: float | None = Field(None, json_schema_extra=INFORMATIONAL)
    sts_temperatures: list[float] | None = Field(
        None, description="STS temperatures the policy calibrated confidences with", json_schema_extra=INFORMATIONAL
    )
    sps_profile: list[float] | None = Field(
        None, description="SPS(B), B = 1..k+1, the scheduler used (this machine)", json_schema_extra=INFORMATIONAL
    )
    chain_drafting: bool = True
    bonus_token_in_tau: bool = True
    seed: int = Field(
        description="sampling seed (sample i decodes with seed + i): noise, not bias",
        json_schema_extra=INFORMATIONAL,
    )
    benchmarks: list[BenchmarkInfo] = Field(
        description="compared by name, sample count and content hash", json_schema_extra=INFORMATIONAL
    )
    deepspec_version: str = Field(json_schema_extra=INFORMATIONAL)
    device: str = Field(json_schema_extra=INFORMATIONAL)
    dtype: str
    draft_dtype: str | None = Field(
        None, description="dtype the draft decoded in (it picks the proposals, never what is committed); "
        "null in results written before it was recorded: the target's dtype"
    )

    @classmethod
    def tau_fields(cls) -> list[str]:
        """The fields two results must agree on to be compared (all but the informational ones)."""
        return [
            name
            for name, f in cls.model_fields.items()
            if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("informational"))
        ]


class Speed(_Model):
    target_tokens_per_s: float = Field(gt=0)
    spec_tokens_per_s: float = Field(gt=0)
    speedup: float = Field(gt=0)
    tokens: int = Field(ge=1, description="tokens generated by each method (same prompts, same lengths)")
    target_seconds: float = Field(ge=0)
    spec_seconds: float = Field(ge=0)
    rounds: int | None = Field(None, ge=1, description="verification rounds of the timed speculative decoding")
    turns: int | None = Field(None, ge=1, description="prompts (turns) decoded: each one's first token comes from its prefill")
    spec_prefill_seconds: float | None = Field(
        None, ge=0, description="the speculative path's prefills alone (prompt forward, first token, draft start), timed apart")
    target_prefill_seconds: float | None = Field(
        None, ge=0, description="the target-only path's prefills alone (prompt forward, first token), timed apart")
    round_cost: float | None = Field(
        None, gt=0,
        description="seconds per round / seconds per target-only decoding step, prefills left out of both: what "
        "one round (k drafts + one verification) costs in target steps; a draft pays where τ exceeds it",
    )


class Acceptance(_Model):
    tau: float | None = Field(
        ge=1.0, description="mean committed tokens per verification round, bonus included; null: no round ran"
    )
    rounds: int = Field(ge=0)
    acceptance_unconditional: list[float | None] = Field(
        description="P(draft j accepted) over the rounds that judged position j, j = 1..k; null: none did"
    )
    acceptance_conditional: list[float | None] = Field(
        description="P(draft j accepted | drafts 1..j-1 accepted), j = 1..k; null: no round got that far"
    )
    accept_length_frac: list[float] = Field(
        description="fraction of rounds committing L tokens, L = 1..k+1 (all 0 when no round ran)"
    )

    @model_validator(mode="after")
    def _lengths(self) -> Acceptance:
        k = len(self.acceptance_unconditional)
        if len(self.acceptance_conditional) != k or len(self.accept_length_frac) != k + 1:
            raise ValueError("per-position arrays must have k entries and the histogram k + 1")
        return self


class BenchmarkResult(Acceptance):
    samples: int = Field(ge=0)
    turns: int = Field(ge=0, description="turns decoded (each starts with one token picked after the prefill)")
    generated_tokens: int = Field(ge=0, description="= sum of committed tokens over rounds + turns")
    accept_length_counts: list[int] = Field(description="rounds committing L tokens, L = 1..k+1")
    position_judged: list[int] = Field(description="rounds that judged draft position j, j = 1..k")
    position_reached: list[int] = Field(
        description="rounds that judged position j with drafts 1..j-1 accepted (conditional denominators)"
    )
    position_accepted: list[int] = Field(description="rounds that committed draft j as accepted, j = 1..k")
    drafted_tokens: int = Field(ge=0, description="drafted tokens put before the target (k per round under 'fixed')")
    speed: Speed | None = None
    prompt_rounds: list[list[int]] | None = Field(
        None, description="per prompt, in sample order: [committed tokens, rounds] over its turns "
        "(the unit the bootstrap resamples); null in results written before it was recorded"
    )
    tau_ci95: list[float] | None = Field(
        None, description="95% percentile-bootstrap interval of τ over prompts (deepspec_core.eval.bootstrap)"
    )

    @model_validator(mode="after")
    def _counts(self) -> BenchmarkResult:
        k = len(self.acceptance_unconditional)
        if not len(self.position_judged) == len(self.position_reached) == len(self.position_accepted) == k:
            raise ValueError("per-position counts must have k entries")
        if len(self.accept_length_counts) != k + 1 or sum(self.accept_length_counts) != self.rounds:
            raise ValueError("accept_length_counts must have k + 1 entries summing to rounds")
        return self


class MacroResult(Acceptance):
    samples: int = Field(ge=0)
    benchmarks_with_rounds: int = Field(ge=0, description="benchmarks averaged (those where a round ran)")
    speedup: float | None = Field(None, description="mean of the benchmarks' speedups when --speed")
    round_cost: float | None = Field(None, description="mean of the benchmarks' round costs (target steps) when --speed")
    tau_ci95: list[float] | None = Field(
        None, description="95% bootstrap interval of the macro τ (each benchmark's prompts resampled)"
    )


class Calibration(_Model):
    """Per-position calibration of the cumulative confidence Π c_i (computed by eval/calibration.py)."""

    sts_temperatures: list[float] | None = Field(description="STS temperature per position; null: none fitted")
    rounds: list[int] = Field(description="rounds that judged position j, j = 1..k")
    ece15_raw: list[float | None]
    ece15_sts: list[float | None] | None = None
    ece20_raw: list[float | None]
    ece20_sts: list[float | None] | None = None
    auc_raw: list[float | None] = Field(description="ROC AUC of a_j for survival; null where one class is absent")
    auc_sts: list[float | None] | None = None
    brier_raw: list[float | None]
    brier_sts: list[float | None] | None = None


class EvalResults(_Model):
    schema_version: int = SCHEMA_VERSION
    protocol: Protocol
    benchmarks: dict[str, BenchmarkResult]
    macro: MacroResult
    calibration: Calibration | None = Field(
        None, description="confidence calibration over every benchmark's rounds, when the draft reports confidences"
    )


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


class AcceptanceCounts(TypedDict):
    """What :func:`acceptance_counts` returns (the count fields of :class:`BenchmarkResult`)."""

    accept_length_counts: list[int]
    position_judged: list[int]
    position_reached: list[int]
    position_accepted: list[int]


class AcceptanceRatios(TypedDict):
    """What :func:`acceptance_from_counts` returns (the fields of :class:`Acceptance`)."""

    tau: float | None
    rounds: int
    acceptance_unconditional: list[float | None]
    acceptance_conditional: list[float | None]
    accept_length_frac: list[float]


def acceptance_counts(outcomes: Sequence[RoundOutcome], k: int) -> AcceptanceCounts:
    """Histogram of committed lengths and per-position counts (judged / reached / accepted).

    Raises ValueError for a round outside the k-token chain (committed ∉ 1..k+1, judged > k).
    """
    lengths = [0] * (k + 1)
    judged, reached, accepted = [0] * k, [0] * k, [0] * k
    for o in outcomes:
        if not 1 <= o.committed <= k + 1 or o.judged > k:
            raise ValueError(f"round {o} does not fit a chain of k = {k} drafted tokens")
        lengths[o.committed - 1] += 1
        for j in range(o.judged):  # position j + 1
            judged[j] += 1
            reached[j] += o.accepted >= j
            accepted[j] += o.accepted > j
    return {
        "accept_length_counts": lengths,
        "position_judged": judged,
        "position_reached": reached,
        "position_accepted": accepted,
    }


def acceptance_from_counts(counts: AcceptanceCounts) -> AcceptanceRatios:
    """τ and per-position acceptance from :func:`acceptance_counts` (undefined ratios are None)."""
    lengths = counts["accept_length_counts"]
    rounds = sum(lengths)
    return {
        "tau": _ratio(sum((i + 1) * c for i, c in enumerate(lengths)), rounds),
        "rounds": rounds,
        "acceptance_unconditional": [
            _ratio(a, n) for a, n in zip(counts["position_accepted"], counts["position_judged"], strict=True)
        ],
        "acceptance_conditional": [
            _ratio(a, n) for a, n in zip(counts["position_accepted"], counts["position_reached"], strict=True)
        ],
        "accept_length_frac": [c / rounds if rounds else 0.0 for c in lengths],
    }


def benchmark_result(
    outcomes: Sequence[RoundOutcome],
    k: int,
    samples: int,
    turns: int,
    generated_tokens: int,
    speed: Speed | None = None,
    prompt_rounds: list[list[int]] | None = None,
) -> BenchmarkResult:
    """Pool the rounds of one benchmark; ``prompt_rounds`` (per prompt [committed, rounds]) adds the
    bootstrap interval of τ. Raises ValueError when the tokens do not add up (``generated_tokens``
    must equal the committed tokens plus one per turn, and the prompts' rows must sum to the rounds)."""
    from deepspec_core.eval.bootstrap import tau_interval

    committed = sum(o.committed for o in outcomes)
    if committed + turns != generated_tokens:
        raise ValueError(
            f"{generated_tokens} generated tokens ≠ {committed} committed in rounds + {turns} turns"
        )
    if prompt_rounds is not None and [sum(c for c, _ in prompt_rounds), sum(r for _, r in prompt_rounds)] != [
        committed, len(outcomes)
    ]:
        raise ValueError("the prompts' [committed, rounds] rows do not add up to the benchmark's rounds")
    ci = tau_interval(prompt_rounds) if prompt_rounds else None
    counts = acceptance_counts(outcomes, k)
    return BenchmarkResult(
        **acceptance_from_counts(counts),
        **counts,
        drafted_tokens=sum(o.drafted for o in outcomes),
        samples=samples,
        turns=turns,
        generated_tokens=generated_tokens,
        speed=speed,
        prompt_rounds=prompt_rounds,
        tau_ci95=None if ci is None else list(ci),
    )


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def macro_average(results: dict[str, BenchmarkResult]) -> MacroResult:
    """Equal-weight mean over the benchmarks where a round ran (a benchmark with no rounds has no τ
    and is left out, as is a position no round of a benchmark reached)."""
    rs = list(results.values())
    if not rs:
        raise ValueError("no benchmark results to average")
    ran = [r for r in rs if r.rounds]
    k = len(rs[0].acceptance_unconditional)

    def per_position(attr: str) -> list[float | None]:
        return [_mean([getattr(r, attr)[j] for r in ran]) for j in range(k)]

    from deepspec_core.eval.bootstrap import macro_tau_interval

    speeds = [r.speed.speedup for r in rs if r.speed is not None]
    per_prompt = [r.prompt_rounds for r in ran if r.prompt_rounds]
    ci = macro_tau_interval(per_prompt) if per_prompt and len(per_prompt) == len(ran) else None
    costs = [r.speed.round_cost for r in rs if r.speed is not None and r.speed.round_cost is not None]
    return MacroResult(
        tau=_mean([r.tau for r in ran]),
        rounds=sum(r.rounds for r in rs),
        samples=sum(r.samples for r in rs),
        benchmarks_with_rounds=len(ran),
        acceptance_unconditional=per_position("acceptance_unconditional"),
        acceptance_conditional=per_position("acceptance_conditional"),
        accept_length_frac=[_mean([r.accept_length_frac[i] for r in ran]) or 0.0 for i in range(k + 1)],
        speedup=sum(speeds) / len(speeds) if speeds and len(speeds) == len(rs) else None,
        round_cost=_mean(costs) if costs and len(costs) == len(rs) else None,
        tau_ci95=None if ci is None else list(ci),
    )


def make_speed(
    tokens: int, target_seconds: float, spec_seconds: float, rounds: int | None = None,
    turns: int | None = None, spec_prefill_seconds: float = 0.0, target_prefill_seconds: float = 0.0,
) -> Speed:
    """Speed of ``tokens`` decoded both ways (end to end, prefills included: what a user waits).

    With ``rounds`` also the cost of a round in target steps: (spec − spec prefills) / rounds over
    (target − target prefills) / (tokens − turns), since each turn's first token comes from its
    prefill in both paths and every later target-only token costs one step. Without the prefill
    timings (``turns`` None) the prefills stay inside both times, which overstates the cost.
    """
    t_rate = tokens / max(target_seconds, 1e-9)
    s_rate = tokens / max(spec_seconds, 1e-9)
    cost = None
    if rounds:
        steps = tokens - (turns or 0)
        step_s = (target_seconds - target_prefill_seconds) / steps if turns and steps > 0 else 1.0 / t_rate
        round_s = (spec_seconds - (spec_prefill_seconds if turns else 0.0)) / rounds
        cost = round_s / step_s if round_s > 0 and step_s > 0 else None
    return Speed(
        target_tokens_per_s=t_rate,
        spec_tokens_per_s=s_rate,
        speedup=s_rate / t_rate,
        tokens=tokens,
        target_seconds=target_seconds,
        spec_seconds=spec_seconds,
        rounds=rounds or None,
        turns=turns or None,
        spec_prefill_seconds=spec_prefill_seconds if turns else None,
        target_prefill_seconds=target_prefill_seconds if turns else None,
        round_cost=cost,
    )
