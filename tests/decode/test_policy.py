"""Draft-length policies: the reference's threshold, Algorithm 1 at batch size 1, prefix
consistency, and losslessness of every policy for every algorithm (greedy identity, and the
distribution test at T = 1)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_doubles import FixedDraft
from test_speculative import ALGOS, PROMPT, RUNS, STEPS, _draft, _prompts, _target, _worst_pvalue

from deepspec_core.decode.policy import DraftLength
from deepspec_core.decode.schedule import prefix_schedule
from deepspec_core.decode.speculative import speculative_generate, target_generate

pytestmark = pytest.mark.unit

confs = st.lists(st.floats(0.01, 0.99), min_size=1, max_size=7)
SPS = (10.0, 9.5, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0)


def test_threshold_cuts_at_the_first_slot_below_it_as_the_reference_does():
    p = DraftLength("threshold", threshold=0.5)
    assert p.length([0.9, 0.8, 0.4, 0.9]) == 2  # per slot, not cumulative: 0.9·0.8 = 0.72 is kept
    assert p.length([0.3, 0.9]) == 0 and p.length([0.6, 0.7]) == 2
    assert DraftLength().length([0.0, 0.0]) == 2  # fixed verifies everything


@settings(max_examples=300, deadline=None)
@given(confs)
def test_the_scheduler_is_algorithm_1_for_one_request(c):
    want = prefix_schedule(torch.tensor([c], dtype=torch.float64), lambda b: SPS[b - 1])[0]
    assert DraftLength("scheduler", sps=SPS).length(c) == want


@settings(max_examples=300, deadline=None)
@given(confs, st.sampled_from(["threshold", "scheduler"]))
def test_policies_are_prefix_consistent(c, name):
    """A draft may stop at the first refused slot: every prefix's length agrees with the whole's."""
    p = DraftLength(name, threshold=0.5, sps=SPS)
    full = p.length(c)
    for n in range(1, len(c) + 1):
        assert p.length(c[:n]) == min(n, full)


def test_calibration_temperatures_change_the_decision():
    hot = DraftLength("threshold", threshold=0.5, temperatures=(1.0, 0.2))
    assert DraftLength("threshold", threshold=0.5).length([0.9, 0.45]) == 1
    assert hot.length([0.9, 0.45]) == 1 and hot.length([0.9, 0.55]) == 2  # σ(logit(.55)/.2) ≈ 0.73


@pytest.mark.parametrize("name", ["threshold", "scheduler"])
@pytest.mark.parametrize("algo", ALGOS)
def test_every_policy_is_lossless_at_temperature_0(algo, name):
    model = _target(sharpen=3.0)
    draft = _draft(algo, model)
    # a fresh DSpark's confidence head sits near 0.5; the others' token probabilities near 1/V
    policy = DraftLength(name, threshold=0.5 if algo == "dspark" else 0.05, sps=SPS)
    lengths = []
    for ids in _prompts(8, seed=4):
        want = target_generate(model, ids, max_new_tokens=18)
        got = speculative_generate(model, draft, ids, 3, 18, draft_length=policy)
        assert got.tokens == want.tokens, (algo, name, ids)
        assert sum(got.accept_lengths) + 1 == len(got.tokens)
        lengths += [o.judged for o in got.outcomes if o.committed == o.accepted + 1]
    assert min(lengths) < 3  # the policy did shorten some rounds (the test can fail)


class ConfidentFixedDraft(FixedDraft):
    """FixedDraft that reports a confidence per slot, so a policy has something to decide on."""

    def propose(self, last_token, k, temperature=1.0, generator=None, policy=None):
        prop = super().propose(last_token, k, temperature, generator)
        prop.confidences = torch.linspace(0.9, 0.1, k)[None]
        return prop


@pytest.mark.parametrize("name", ["threshold", "scheduler"])
def test_every_policy_keeps_the_target_distribution_at_temperature_1(name):
    from test_speculative import _exact_marginals

    model = _target(sharpen=6.0, seed=3)
    exact = _exact_marginals(model)
    noise = torch.softmax(4.0 * torch.randn(48, generator=torch.Generator().manual_seed(9)), -1)
    draft = ConfidentFixedDraft(0.5 * exact[0] + 0.5 * noise)
    policy = DraftLength(name, threshold=0.5, sps=SPS)
    g = torch.Generator().manual_seed(1234)
    runs = [speculative_generate(model, draft, PROMPT, 3, STEPS, 1.0, g, draft_length=policy) for _ in range(RUNS)]
    assert any(o.judged < 3 for r in runs for o in r.outcomes)
    assert _worst_pvalue(torch.tensor([r.tokens for r in runs]), exact) > 1e-3
