"""Bootstrap intervals of τ over prompts: they contain τ, shrink with more prompts, vanish for
identical prompts, and a paired difference resolves a real gap that unpaired noise would hide."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepspec_core.eval import bootstrap as bs

pytestmark = pytest.mark.unit

prompt = st.tuples(st.integers(1, 40), st.integers(1, 20)).map(lambda cr: [cr[0] + cr[1], cr[1]])  # τ ≥ 1


def _tau(rows):
    return sum(c for c, _ in rows) / sum(r for _, r in rows)


@settings(max_examples=60, deadline=None)
@given(st.lists(prompt, min_size=1, max_size=30), st.integers(0, 10))
def test_the_interval_contains_tau_and_is_deterministic(rows, seed):
    lo, hi = bs.tau_interval(rows, resamples=400, seed=seed)
    assert lo - 1e-9 <= _tau(rows) <= hi + 1e-9 and 1.0 <= lo
    assert bs.tau_interval(rows, resamples=400, seed=seed) == (lo, hi)


def test_identical_prompts_give_a_point_and_more_prompts_a_narrower_interval():
    assert bs.tau_interval([[6, 4]] * 5) == pytest.approx((1.5, 1.5))
    rng = np.random.default_rng(0)
    rows = [[int(r + rng.integers(0, 3 * r)), int(r)] for r in rng.integers(2, 12, size=10)]
    lo, hi = bs.tau_interval(rows)
    lo4, hi4 = bs.tau_interval(rows * 4)
    assert hi4 - lo4 < 0.7 * (hi - lo)


def test_prompts_without_rounds_and_empty_benchmarks_are_left_out():
    assert bs.tau_interval([]) is None and bs.tau_interval([[0, 0]]) is None
    # the macro of one benchmark is that benchmark's interval; an empty one does not enter the mean
    rows = [[5, 2], [9, 3], [4, 4]]
    assert bs.macro_tau_interval([rows, []]) == bs.tau_interval(rows)


def test_a_paired_difference_resolves_a_gap_hidden_by_prompt_difficulty():
    rng = np.random.default_rng(1)
    rounds = rng.integers(5, 30, size=20)
    base_tau = rng.uniform(1.1, 3.0, size=20)  # prompts differ a lot in difficulty
    a = [[int(round(t * r)), int(r)] for t, r in zip(base_tau, rounds, strict=True)]
    b = [[c + int(0.1 * r), r] for c, r in a]  # the same prompts, 0.1 more per round
    lo_a, hi_a = bs.tau_interval(a)
    lo_b, hi_b = bs.tau_interval(b)
    assert lo_b < hi_a  # unpaired, the intervals overlap ...
    lo, hi = bs.paired_difference_interval([b], [a])
    assert 0 < lo <= hi  # ... paired, the gain is resolved
    assert bs.paired_difference_interval([a], [a]) == (0.0, 0.0)


def test_a_paired_difference_needs_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        bs.paired_difference_interval([[[3, 2]]], [[[3, 2], [4, 2]]])
    with pytest.raises(ValueError, match="non-negative"):
        bs.tau_interval([[-1, 2]])
