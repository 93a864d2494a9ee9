"""τ and per-position acceptance from committed rounds; undefined ratios are null; the results
schema rejects malformed data."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deepspec_core.decode.rounds import RoundOutcome
from deepspec_core.eval import metrics as mt

pytestmark = pytest.mark.unit


def full_rounds(lengths: list[int], k: int) -> list[RoundOutcome]:
    """Rounds that nothing cut: L tokens = L − 1 accepted drafts + 1, every position judged."""
    return [RoundOutcome.of(n - 1, k, n) for n in lengths]


def result(lengths: list[int], k: int, samples: int = 1, speed=None) -> mt.BenchmarkResult:
    return mt.benchmark_result(full_rounds(lengths, k), k, samples, samples, sum(lengths) + samples, speed)


def test_acceptance_statistics_of_a_known_set_of_rounds():
    # k = 3: rounds committing 1, 2, 4, 4, 3 tokens (accepted drafts 0, 1, 3, 3, 2)
    r = result([1, 2, 4, 4, 3], k=3, samples=2)
    assert r.tau == pytest.approx(14 / 5) and r.generated_tokens == 16
    assert r.rounds == 5 and r.accept_length_counts == [1, 1, 1, 2]
    assert r.acceptance_unconditional == pytest.approx([4 / 5, 3 / 5, 2 / 5])
    assert r.acceptance_conditional == pytest.approx([4 / 5, 3 / 4, 2 / 3])
    assert r.accept_length_frac == pytest.approx([0.2, 0.2, 0.2, 0.4])
    # with every position judged, survival is the product of the conditionals
    assert r.acceptance_unconditional[2] == pytest.approx(0.8 * 0.75 * (2 / 3))
    with pytest.raises(ValueError, match="k = 3"):
        mt.acceptance_counts([RoundOutcome(5, 4, 4, 4)], 3)


def test_positions_no_round_reached_are_null_not_zero():
    r = result([1, 1, 2], k=3)  # nothing ever accepted past position 1
    assert r.acceptance_conditional[0] == pytest.approx(1 / 3)
    assert r.acceptance_conditional[1] == 0.0  # reached once (after the accepted draft 1), rejected
    assert r.acceptance_conditional[2] is None and r.position_reached[2] == 0
    assert r.acceptance_unconditional == pytest.approx([1 / 3, 0.0, 0.0])  # judged, not accepted
    empty = mt.benchmark_result([], 3, samples=2, turns=2, generated_tokens=2)  # EOS right after the prefill
    assert empty.tau is None and empty.rounds == 0
    assert empty.acceptance_conditional == [None] * 3 and empty.acceptance_unconditional == [None] * 3
    m = mt.macro_average({"a": r, "empty": empty})
    assert m.tau == pytest.approx(r.tau) and m.benchmarks_with_rounds == 1  # no τ is not τ = 1
    assert m.acceptance_conditional[2] is None
    assert mt.macro_average({"empty": empty}).tau is None


def test_macro_is_an_equal_weight_mean():
    a = result([1, 1], 2, 1, mt.make_speed(10, 2.0, 1.0))
    b = result([3, 3, 3, 3], 2, 3, mt.make_speed(12, 3.0, 1.0))
    m = mt.macro_average({"a": a, "b": b})
    assert m.tau == pytest.approx((1 + 3) / 2) and m.rounds == 6 and m.samples == 4
    # position 2: a never reached it (undefined), so the mean is b's alone
    assert a.acceptance_conditional == [0.0, None]
    assert m.acceptance_conditional == pytest.approx([0.5, 1.0])
    assert m.speedup == pytest.approx((2.0 + 3.0) / 2)
    assert a.speed.target_tokens_per_s == pytest.approx(5.0) and a.speed.spec_tokens_per_s == pytest.approx(
        10.0
    )
    assert mt.macro_average({"a": result([1], 2), "b": b}).speedup is None


def test_schema_rejects_malformed_results():
    good = result([2, 3], 2).model_dump()
    mt.BenchmarkResult.model_validate(good)
    with pytest.raises(ValidationError, match="k entries"):
        mt.BenchmarkResult.model_validate({**good, "accept_length_frac": [1.0]})
    with pytest.raises(ValidationError, match="summing to rounds"):
        mt.BenchmarkResult.model_validate({**good, "accept_length_counts": [0, 1, 2]})
    with pytest.raises(ValidationError):
        mt.BenchmarkResult.model_validate({**good, "tau": 0.5})
    with pytest.raises(ValidationError):
        mt.BenchmarkResult.model_validate({**good, "surprise": 1})
    schema = mt.EvalResults.model_json_schema()
    assert {"protocol", "benchmarks", "macro"} <= set(schema["properties"])


def test_every_protocol_field_but_the_informational_ones_must_match_to_compare():
    fields = mt.Protocol.tau_fields()
    for must in ("target", "temperature", "max_new_tokens", "thinking", "chat_template_hash", "all_turns",
                 "subset_seed", "num_draft_tokens", "bonus_token_in_tau", "chain_drafting", "dtype"):
        assert must in fields
    for free in ("draft", "algorithm", "seed", "deepspec_version", "device", "draft_params", "benchmarks"):
        assert free not in fields


def test_round_cost_leaves_the_prefills_out_of_rounds_and_steps():
    """65 tokens of one prompt: target-only 6.5 s of which 0.1 s prefill (the first token) → 64 steps of
    0.1 s; speculative 4.1 s of which 0.1 s prefill in 25 rounds → 0.16 s a round = 1.6 steps. Without
    the prefill timings both stay in, as before: (4.1 / 25) · (65 / 6.5) = 1.64."""
    sp = mt.make_speed(65, 6.5, 4.1, rounds=25, turns=1, spec_prefill_seconds=0.1, target_prefill_seconds=0.1)
    assert sp.round_cost == pytest.approx(1.6)
    assert sp.speedup == pytest.approx(6.5 / 4.1)  # end to end, prefills included
    assert mt.make_speed(65, 6.5, 4.1, rounds=25).round_cost == pytest.approx(1.64)
    assert mt.make_speed(65, 6.5, 4.1).round_cost is None
