"""τ counts only committed tokens: per turn, sum(accepted lengths) + 1 == tokens generated, for
oracle, random and real drafts at T = 0 and T = 1, with EOS and ``max_new_tokens`` ending a round."""

from __future__ import annotations

import pytest
import torch
from spec_doubles import FixedDraft, MixtureDraft
from test_speculative import ALGOS, V, _draft, _prompts, _target

from deepspec_core.decode.rounds import RoundOutcome
from deepspec_core.decode.speculative import speculative_generate, target_generate
from deepspec_core.eval import metrics as mt

pytestmark = pytest.mark.integration


def _oracle(model):
    return MixtureDraft(model, 1.0, torch.full((V,), 1.0 / V))


def _check_invariant(gen, k: int, max_new: int, eos: list[int]) -> None:
    """Every round but the last commits its accepted drafts plus one token, all k positions judged;
    the last one too, unless the output ended inside it (an accepted EOS, or max_new_tokens), where
    it commits only the drafts it kept and judged only those."""
    assert sum(gen.accept_lengths) + 1 == len(gen.tokens)
    for o in gen.outcomes[:-1]:
        assert (o.committed, o.judged, o.drafted) == (o.accepted + 1, k, k), o
    if gen.outcomes:
        last = gen.outcomes[-1]
        assert last in (RoundOutcome(last.accepted + 1, last.accepted, k, k),
                        RoundOutcome(last.accepted, last.accepted, last.accepted, k)), last
    # Decoding stops exactly when the output is over: at the first EOS or at max_new_tokens.
    assert not set(gen.tokens[:-1]) & set(eos) and (len(gen.tokens) == max_new or gen.tokens[-1] in eos)


@pytest.mark.parametrize(("max_new", "want_lengths"), [(9, [8]), (10, [8, 1]), (17, [8, 8]), (3, [2])])
def test_an_oracle_draft_is_credited_only_with_the_tokens_it_committed(max_new, want_lengths):
    """k = 7: one full round commits 8 tokens after the prefill token; the round cut by
    max_new_tokens counts what it kept (10 new tokens: τ 4.5, not 8.0)."""
    model = _target()
    ids = _prompts(1)[0]
    got = speculative_generate(model, _oracle(model), ids, 7, max_new)
    assert len(got.tokens) == max_new and got.accept_lengths == want_lengths
    res = mt.benchmark_result(got.outcomes, 7, samples=1, turns=1, generated_tokens=len(got.tokens))
    assert res.tau == pytest.approx(sum(want_lengths) / len(want_lengths))
    # a cut round is censored: its positions after the cut are not rejections
    cut = got.outcomes[-1]
    if want_lengths[-1] < 8:
        assert cut == RoundOutcome(want_lengths[-1], want_lengths[-1], want_lengths[-1], 7)
        assert res.acceptance_unconditional[: cut.judged] == [1.0] * cut.judged


def test_an_accepted_eos_ends_the_round_without_a_bonus_token():
    model = _target()
    ids = _prompts(1)[0]
    free = speculative_generate(model, _oracle(model), ids, 7, 16)
    eos = free.tokens[3]  # drafted (accepted) at position 3 of the first round
    assert eos not in free.tokens[:3]
    got = speculative_generate(model, _oracle(model), ids, 7, 16, eos_token_ids=[eos])
    assert got.tokens == free.tokens[:4] and got.accept_lengths == [3]
    assert got.outcomes == [RoundOutcome(committed=3, accepted=3, judged=3, drafted=7)]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("draft_kind", ["oracle", "random", *ALGOS])
def test_committed_tokens_add_up_for_every_draft(draft_kind, temperature):
    model = _target(sharpen=3.0)
    k = 3
    for i, ids in enumerate(_prompts(6, seed=2)):
        if draft_kind == "oracle":
            draft = _oracle(model)
        elif draft_kind == "random":
            draft = FixedDraft(torch.full((V,), 1.0 / V))
        else:
            draft = _draft(draft_kind, model)
        eos = [int(ids[0, -1])] if i % 2 else []  # half the prompts may stop early
        for max_new in (1, 2, 7, 19):
            g = torch.Generator().manual_seed(i)
            if draft_kind == "random" and temperature == 0.0:
                continue  # FixedDraft samples; greedy needs a deterministic draft
            got = speculative_generate(model, draft, ids, k, max_new, temperature, g, eos)
            _check_invariant(got, k, max_new, eos)
            assert len(got.tokens) <= max_new
            if temperature == 0.0:
                assert got.tokens == target_generate(model, ids, max_new, eos_token_ids=eos).tokens


def test_per_position_counts_follow_the_committed_rounds():
    # k = 3: full rounds (0, 1, 3 accepted), an EOS accepted at position 2, a round cut after 1 draft
    rounds = [
        RoundOutcome.of(0, 3, 1),
        RoundOutcome.of(1, 3, 2),
        RoundOutcome.of(3, 3, 4),
        RoundOutcome.of(3, 3, 2),  # EOS at draft 2: 2 tokens, no bonus
        RoundOutcome.of(2, 3, 1),  # max_new_tokens kept 1 of 3
    ]
    assert [(o.committed, o.accepted, o.judged) for o in rounds] == [
        (1, 0, 3), (2, 1, 3), (4, 3, 3), (2, 2, 2), (1, 1, 1)
    ]
    r = mt.benchmark_result(rounds, 3, samples=2, turns=2, generated_tokens=12)
    assert r.tau == pytest.approx(10 / 5) and r.accept_length_counts == [2, 2, 0, 1]
    assert r.position_judged == [5, 4, 3] and r.position_accepted == [4, 2, 1]
    assert r.position_reached == [5, 3, 1]
    assert r.acceptance_unconditional == pytest.approx([4 / 5, 2 / 4, 1 / 3])
    assert r.acceptance_conditional == pytest.approx([4 / 5, 2 / 3, 1 / 1])
    with pytest.raises(ValueError, match="generated tokens"):
        mt.benchmark_result(rounds, 3, samples=2, turns=2, generated_tokens=13)
    with pytest.raises(ValueError, match="cannot append"):
        RoundOutcome.of(1, 3, 3)
