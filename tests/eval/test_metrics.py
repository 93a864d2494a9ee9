"""τ and per-position acceptance from accepted lengths; the results schema rejects malformed data."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deepspec_core.eval import metrics as mt


def test_acceptance_statistics_of_a_known_set_of_rounds():
    # k = 3: rounds committing 1, 2, 4, 4, 3 tokens (accepted drafts 0, 1, 3, 3, 2)
    r = mt.benchmark_result([1, 2, 4, 4, 3], k=3, samples=2, generated_tokens=14)
    assert r.tau == pytest.approx(14 / 5)
    assert r.rounds == 5 and r.accept_length_counts == [1, 1, 1, 2]
    assert r.acceptance_unconditional == pytest.approx([4 / 5, 3 / 5, 2 / 5])
    assert r.acceptance_conditional == pytest.approx([4 / 5, 3 / 4, 2 / 3])
    assert r.accept_length_frac == pytest.approx([0.2, 0.2, 0.2, 0.4])
    # survival is the product of the conditionals
    assert r.acceptance_unconditional[2] == pytest.approx(0.8 * 0.75 * (2 / 3))
    with pytest.raises(ValueError, match="outside 1..4"):
        mt.length_counts([5], 3)


def test_macro_is_an_equal_weight_mean():
    a = mt.benchmark_result([1, 1], 2, 1, 2, mt.make_speed(10, 2.0, 1.0))
    b = mt.benchmark_result([3, 3, 3, 3], 2, 3, 12, mt.make_speed(12, 3.0, 1.0))
    m = mt.macro_average({"a": a, "b": b})
    assert m.tau == pytest.approx((1 + 3) / 2) and m.rounds == 6 and m.samples == 4
    assert m.acceptance_conditional == pytest.approx([0.5, 0.5])
    assert m.speedup == pytest.approx((2.0 + 3.0) / 2)
    assert a.speed.target_tokens_per_s == pytest.approx(5.0) and a.speed.spec_tokens_per_s == pytest.approx(
        10.0
    )
    assert mt.macro_average({"a": mt.benchmark_result([1], 2, 1, 1), "b": b}).speedup is None


def test_schema_rejects_malformed_results():
    good = mt.benchmark_result([2, 3], 2, 1, 5).model_dump()
    mt.BenchmarkResult.model_validate(good)
    with pytest.raises(ValidationError, match="k entries"):
        mt.BenchmarkResult.model_validate({**good, "accept_length_frac": [1.0]})
    with pytest.raises(ValidationError):
        mt.BenchmarkResult.model_validate({**good, "tau": 0.5})
    with pytest.raises(ValidationError):
        mt.BenchmarkResult.model_validate({**good, "surprise": 1})
    schema = mt.EvalResults.model_json_schema()
    assert {"protocol", "benchmarks", "macro"} <= set(schema["properties"])
