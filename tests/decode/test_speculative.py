"""Speculative decoding is lossless: greedy output equals target-only greedy output token for token,
and at temperature 1 the generated tokens follow the target distribution (a broken rule fails)."""

from __future__ import annotations

import pytest
import torch
from spec_doubles import FixedDraft, MixtureDraft, chi_square_pvalue
from transformers import Qwen3Config, Qwen3ForCausalLM

from deepspec_core.decode.speculative import (
    Verdict,
    sample,
    speculative_generate,
    target_generate,
    verify,
)
from deepspec_core.drafts import DRAFTS
from deepspec_core.spec import RunSpec, algorithms

pytestmark = pytest.mark.integration

V = 48
ALGOS = algorithms()


def _target(vocab: int = V, sharpen: float = 1.0, seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        # A random model is nearly uniform; a sharper head makes p far from any draft's q.
        model.lm_head.weight.mul_(sharpen)
    return model


def _draft(algo: str, model: Qwen3ForCausalLM, seed: int = 0, **draft_kw):
    draft = {"algo": algo, "num_layers": 1, **draft_kw}
    if algo != "eagle3":
        draft["block_size"] = 4
    spec = RunSpec.model_validate({"target": {"layer_ids": [0, 2], "mask_token_id": V - 1}, "draft": draft})
    torch.manual_seed(seed)
    return (
        DRAFTS.get(algo)
        .from_spec(
            spec.draft, spec.target, model.config, model.get_input_embeddings().weight, model.lm_head.weight
        )
        .eval()
    )


def _prompts(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, V, (1, int(torch.randint(1, 12, (), generator=g))), generator=g) for _ in range(n)
    ]


@pytest.mark.parametrize("algo", ALGOS)
def test_greedy_is_token_identical_to_target_greedy_for_each_algorithm(algo):
    model = _target()
    draft = _draft(algo, model)
    for ids in _prompts(12):
        want = target_generate(model, ids, max_new_tokens=20)
        for k in (1, 3):
            got = speculative_generate(model, draft, ids, num_draft_tokens=k, max_new_tokens=20)
            assert got.tokens == want.tokens, (algo, k, ids)
            assert all(1 <= n <= k + 1 for n in got.accept_lengths)


@pytest.mark.parametrize("algo", ALGOS)
def test_a_bf16_draft_beside_an_fp32_target_changes_proposals_not_output(algo):
    """The CPU decoding default (bf16 draft, fp32 target): greedy output is still the target's, and
    sampling at T = 1 runs on the fp32 distributions the bf16 draft sampled from."""
    model = _target()
    draft = _draft(algo, model).to(torch.bfloat16)
    for ids in _prompts(6, seed=1):
        want = target_generate(model, ids, max_new_tokens=16)
        got = speculative_generate(model, draft, ids, num_draft_tokens=3, max_new_tokens=16)
        assert got.tokens == want.tokens, (algo, ids)
    prop_gen = torch.Generator().manual_seed(0)
    draft.start(ids, torch.zeros(1, ids.shape[1], 2, 32))
    prop = draft.propose(torch.tensor([1]), 3, 1.0, prop_gen)
    assert prop.dists is not None and prop.dists.dtype == torch.float32
    torch.testing.assert_close(prop.dists.sum(-1), torch.ones(1, 3))


@pytest.mark.parametrize("rows", [1, 2, 6, 8, 9])
def test_a_verification_forward_under_few_row_linear_equals_the_plain_forward(rows):
    """FewRowLinear (W·xᵀ for 2–8 fp32 CPU rows) changes the kernel, not the values: the target's
    logits and captured features agree with the plain forward to fp32 rounding."""
    from deepspec_core.decode.cpu_linear import FewRowLinear, few_row_linear
    from deepspec_core.decode.speculative import capture_features, lm_logits

    model = _target(vocab=300)
    ids = torch.randint(0, 300, (1, rows))
    want = capture_features(model, ids, layer_ids=[0, 2])
    with FewRowLinear():
        got = capture_features(model, ids, layer_ids=[0, 2])
        logits = lm_logits(model, got.final_hidden)
    assert (few_row_linear(got.final_hidden, model.lm_head.weight) is not None) == (2 <= rows <= 8)
    torch.testing.assert_close(got.aux_hidden, want.aux_hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, model.lm_head(want.final_hidden), rtol=1e-5, atol=1e-5)
    x, w, bias = torch.randn(3, 5, 16), torch.randn(7, 16), torch.randn(7)
    torch.testing.assert_close(few_row_linear(x[:1, :4], w, bias), torch.nn.functional.linear(x[:1, :4], w, bias))
    assert few_row_linear(x[:1, :4].bfloat16(), w.bfloat16()) is None  # only fp32 changes kernel


@pytest.mark.parametrize("algo", ALGOS)
def test_greedy_with_packed_weights_gives_the_plain_targets_tokens(algo):
    """Target and draft computing through oneDNN-packed weights (what evaluation does on a CPU):
    greedy speculative decoding still gives the unpacked target's own greedy tokens."""
    import copy

    from deepspec_core.decode.cpu_linear import pack_linears, packing_available

    if not packing_available():
        pytest.skip("this torch build has no oneDNN")
    plain = _target(vocab=300)
    model = copy.deepcopy(plain)
    draft = _draft(algo, model)
    assert pack_linears(model) > 0 and pack_linears(draft) > 0
    for ids in _prompts(6):
        want = target_generate(plain, ids, max_new_tokens=16)
        got = speculative_generate(model, draft, ids, num_draft_tokens=3, max_new_tokens=16)
        assert got.tokens == want.tokens, (algo, ids)


@pytest.mark.parametrize("algo", ALGOS)
def test_greedy_is_lossless_with_a_reduced_draft_vocabulary(algo):
    """Drafts limited to 12 of 48 tokens (a non-contiguous mapping) still give the target's tokens."""
    from deepspec_core.drafts.base import build_vocab_mapping

    model = _target()
    draft = _draft(algo, model, draft_vocab_size=12)
    draft.set_vocab_mapping(*build_vocab_mapping(torch.rand(V, generator=torch.Generator().manual_seed(3)), 12))
    for ids in _prompts(6):
        want = target_generate(model, ids, max_new_tokens=16)
        got = speculative_generate(model, draft, ids, num_draft_tokens=3, max_new_tokens=16)
        assert got.tokens == want.tokens, (algo, ids)
    sampled = speculative_generate(model, draft, ids, 3, 16, 1.0, torch.Generator().manual_seed(0))
    assert len(sampled.tokens) == 16


@pytest.mark.parametrize("alpha", [0.0, 0.6, 0.9, 1.0])
def test_greedy_is_lossless_at_every_acceptance_rate(alpha):
    """A draft that is right with probability alpha exercises every accepted length and cache crop."""
    model = _target(sharpen=3.0)
    noise = torch.full((V,), 1.0 / V)
    lengths = []
    for i, ids in enumerate(_prompts(10, seed=1)):
        eos = [int(ids[0, 0])]  # some prompts stop early at this "EOS", others run to the limit
        want = target_generate(model, ids, max_new_tokens=24, eos_token_ids=eos)
        draft = MixtureDraft(model, alpha, noise, seed=i)
        got = speculative_generate(model, draft, ids, 4, 24, eos_token_ids=eos)
        assert got.tokens == want.tokens
        lengths += got.accept_lengths
        if alpha == 1.0:  # 4 drafts + the bonus token, but the round the output ends in counts what it kept
            assert got.accept_lengths[:-1] == [5] * (got.rounds - 1)
    if alpha == 0.6:
        assert len(set(lengths)) >= 4


def test_max_new_tokens_and_eos_are_respected():
    model = _target()
    ids = _prompts(1)[0]
    draft = MixtureDraft(model, 1.0, torch.full((V,), 1.0 / V))
    full = speculative_generate(model, draft, ids, 4, 13)
    assert len(full.tokens) == 13
    eos = full.tokens[6]
    stop = speculative_generate(
        model, MixtureDraft(model, 1.0, torch.full((V,), 1.0 / V)), ids, 4, 13, eos_token_ids=[eos]
    )
    assert stop.tokens == full.tokens[: full.tokens.index(eos) + 1]
    assert len(speculative_generate(model, draft, ids, 4, 1).tokens) == 1


# -- temperature 1: the output distribution ----------------------------------------------------

PROMPT = torch.tensor([[3, 17, 5]])
STEPS = 3  # tokens generated per run; tokens 2 and 3 come out of verification rounds
RUNS = 600


def _exact_marginals(model) -> list[torch.Tensor]:
    """Exact marginal distribution of generated tokens 1..3 under target sampling at T = 1."""
    with torch.no_grad():
        p1 = torch.softmax(model(PROMPT).logits[0, -1].float(), -1)  # (V,)
        ctx1 = torch.cat([PROMPT.expand(V, -1), torch.arange(V)[:, None]], 1)  # (V, T+1)
        p2_given = torch.softmax(model(ctx1).logits[:, -1].float(), -1)  # (V, V)
        joint12 = p1[:, None] * p2_given  # (V, V)
        ctx2 = torch.cat([ctx1.repeat_interleave(V, 0), torch.arange(V).repeat(V)[:, None]], 1)  # (V², T+2)
        p3_given = torch.softmax(model(ctx2).logits[:, -1].float(), -1)  # (V², V)
        p3 = (joint12.reshape(-1, 1) * p3_given).sum(0)
    return [p1, joint12.sum(0), p3]


def _spec_samples(model, exact, overlap: float, verify_fn=verify) -> torch.Tensor:
    """(RUNS, STEPS) tokens from speculative sampling with a context-free draft, q = r at every
    position: ``overlap`` of the target's first-token distribution plus a sharp unrelated one.
    overlap 0.5 gets many drafted tokens accepted (τ ≈ 1.9); overlap 0 makes q far from p, where
    a wrong residual shows most."""
    g = torch.Generator().manual_seed(1234)
    noise = torch.softmax(4.0 * torch.randn(V, generator=torch.Generator().manual_seed(9)), -1)
    draft = FixedDraft(overlap * exact[0] + (1 - overlap) * noise)
    out = [
        speculative_generate(model, draft, PROMPT, 3, STEPS, 1.0, g, verify_fn=verify_fn).tokens
        for _ in range(RUNS)
    ]
    return torch.tensor(out)


@pytest.fixture(scope="module")
def sharp_target():
    return _target(sharpen=6.0, seed=3)


@pytest.fixture(scope="module")
def exact(sharp_target):
    return _exact_marginals(sharp_target)


def _worst_pvalue(samples: torch.Tensor, exact: list[torch.Tensor]) -> float:
    return min(chi_square_pvalue(torch.bincount(samples[:, i], minlength=V), exact[i]) for i in range(STEPS))


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_sampling_matches_the_target_distribution(sharp_target, exact, overlap):
    assert _worst_pvalue(_spec_samples(sharp_target, exact, overlap), exact) > 1e-3


def test_target_only_sampling_matches_the_exact_distribution(sharp_target, exact):
    g = torch.Generator().manual_seed(99)
    runs = torch.tensor([target_generate(sharp_target, PROMPT, STEPS, 1.0, g).tokens for _ in range(RUNS)])
    assert _worst_pvalue(runs, exact) > 1e-3


def _accept_always(prop, logits, temperature, generator):
    k = prop.tokens.shape[1]
    return Verdict(
        torch.tensor([k]), sample(torch.softmax(logits[:, k].float() / temperature, -1), generator)
    )


def _resample_from_p(prop, logits, temperature, generator):
    v = verify(prop, logits, temperature, generator)
    n = int(v.num_accepted[0])
    return Verdict(v.num_accepted, sample(torch.softmax(logits[:, n].float() / temperature, -1), generator))


@pytest.mark.parametrize("broken", [_accept_always, _resample_from_p])
def test_the_distribution_check_catches_a_broken_rule(sharp_target, exact, broken):
    assert _worst_pvalue(_spec_samples(sharp_target, exact, 0.0, broken), exact) < 1e-6


def _recording(rounds: list):
    """``verify``, recording each round's proposal and verdict."""

    def verify_fn(prop, logits, temperature, generator):
        verdict = verify(prop, logits, temperature, generator)
        rounds.append((prop, verdict))
        return verdict

    return verify_fn


@pytest.mark.parametrize("algo", ALGOS)
def test_sampling_runs_with_each_algorithm(algo):
    """Real drafts at T = 1: the rule gets each proposal's exact q (the distribution its tokens were
    drawn from), the output is exactly what the verdicts commit, and a seed reproduces it."""
    model = _target(sharpen=3.0)
    draft = _draft(algo, model)
    ids = _prompts(1)[0]
    rounds: list = []
    a = speculative_generate(model, draft, ids, 3, 16, 1.0, torch.Generator().manual_seed(5),
                             verify_fn=_recording(rounds))
    b = speculative_generate(model, draft, ids, 3, 16, 1.0, torch.Generator().manual_seed(5))
    assert a.tokens == b.tokens and a.outcomes == b.outcomes and len(a.tokens) == 16
    # The token after the prefill is the target's own draw, as target-only sampling draws it.
    assert a.tokens[0] == target_generate(model, ids, 1, 1.0, torch.Generator().manual_seed(5)).tokens[0]
    replay = a.tokens[:1]
    for prop, verdict in rounds:
        assert prop.dists.shape == (1, 3, V) and torch.allclose(prop.dists.sum(-1), torch.ones(1, 3))
        assert torch.allclose(prop.probs, prop.dists.gather(-1, prop.tokens[..., None])[..., 0])
        n = int(verdict.num_accepted[0])
        replay += prop.tokens[0, :n].tolist() + [int(verdict.next_token[0])]
    assert len(rounds) == a.rounds and replay[:16] == a.tokens


def test_dspark_confidences_are_recorded_per_round_for_calibration():
    from deepspec_core.decode.schedule import calibration_rounds, fit_sts

    model = _target(sharpen=3.0)
    draft = _draft("dspark", model)
    gens, proposed = [], []
    for ids in _prompts(3):
        rounds: list = []
        gens.append(speculative_generate(model, draft, ids, 3, 12, verify_fn=_recording(rounds)))
        proposed.append([prop.confidences[0].tolist() for prop, _ in rounds])
    # Each round records the confidences its proposal carried, one per drafted slot.
    assert [g.confidences for g in gens] == proposed and all(len(c) == 3 for p in proposed for c in p)
    conf, accepted = calibration_rounds(gens)
    assert conf.shape == (sum(g.rounds for g in gens), 3)  # no round here was cut short
    assert torch.equal(conf, torch.tensor([c for p in proposed for c in p], dtype=torch.float64))
    assert accepted.tolist() == [o.accepted for g in gens for o in g.outcomes]
    assert len(fit_sts(conf, accepted)) == 3
