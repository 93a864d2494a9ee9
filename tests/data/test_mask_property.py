"""The loss mask, property-tested: over generated conversations whose answers contain template
words, copies of the prompt, their own reasoning, surrounding whitespace and unicode, the
supervised tokens decode to exactly what the target generated for each assistant turn (reasoning
block when rendered, content as the template renders it, end-of-turn token unless the answer was
cut), for Qwen3-, Llama 3-, ChatML (SmolLM2)- and Gemma-style templates and the tiny target."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepspec_core.data.tokenize import tokenize_conversation

pytestmark = pytest.mark.integration

PIECES = [
    "assistant", "user", "system", "model", "<think>", "</think>", "Paris", "The answer is 15.", "def f(x):",
    "    return x", " ", "  ", "\n", "\n\n", "\t", "é", "漢字", "🙂", "∑", "0", "42", ".", ",", "(", ")", "'", '"',
]
text = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
nonblank = text.filter(lambda t: t.strip() != "")


@st.composite
def conversations(draw):
    """A system turn maybe, 1–3 user/assistant exchanges; answers that repeat the prompt or hide in
    their reasoning; some answers cut by max_tokens."""
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(nonblank)})
    reasons = []
    for _ in range(draw(st.integers(1, 3))):
        question = draw(nonblank)
        messages.append({"role": "user", "content": question})
        answer = draw(st.one_of(text, st.just(question), st.just(" " + question + "\n")))
        msg = {"role": "assistant", "content": answer}
        if draw(st.booleans()):
            msg["thinking"] = draw(st.one_of(nonblank, st.just("so " + answer.strip() + " it is") if answer.strip() else nonblank))
        messages.append(msg)
        reasons.append(draw(st.sampled_from(["stop", "stop", "length"])))
    return {"id": "p", "messages": messages, "regen": {"finish_reasons": reasons}}


def _assistant(conv):
    answers = [(i, m) for i, m in enumerate(conv["messages"]) if m["role"] == "assistant"]
    last_user = max(i for i, m in enumerate(conv["messages"]) if m["role"] == "user")
    cut = [r == "length" for r in conv["regen"]["finish_reasons"]]
    return answers, last_user, cut


def expect_qwen3(conv, thinking):
    answers, last_user, cut = _assistant(conv)
    out = []
    for j, (i, m) in enumerate(answers):
        reasoning = m.get("thinking", "") if thinking else ""
        if i > last_user and (i == len(conv["messages"]) - 1 or reasoning):
            body = m["content"].lstrip("\n")
            if thinking:  # the model wrote the think block; with thinking off it was the prompt's
                body = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + body
        else:
            body = m["content"]
        out.append(body + ("" if cut[j] else "<|im_end|>"))
    return out


def expect_tiny(conv, thinking):
    answers, last_user, cut = _assistant(conv)
    out = []
    for j, (i, m) in enumerate(answers):
        body = m["content"]
        if thinking and i > last_user:
            body = "<think>\n" + m.get("thinking", "").strip() + "\n</think>\n\n" + body
        out.append(body + ("" if cut[j] else "<|im_end|>"))
    return out


def expect_plain(eot, trim):
    def expect(conv, thinking):
        answers, _, cut = _assistant(conv)
        return [(m["content"].strip() if trim else m["content"]) + ("" if c else eot)
                for (_, m), c in zip(answers, cut, strict=True)]

    return expect


def supervised_runs(tok, sample) -> list[str]:
    runs, cur = [], []
    for tid, m in zip(sample.input_ids, sample.loss_mask, strict=True):
        if m:
            cur.append(tid)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


CASES = {
    "qwen3": ("qwen_tok", expect_qwen3),
    "llama3": ("llama_tok", expect_plain("<|eot_id|>", trim=True)),
    "chatml": ("chatml_tok", expect_plain("<|im_end|>", trim=False)),
    "gemma": ("gemma_tok", expect_plain("<end_of_turn>", trim=True)),
    "tiny": ("tiny_tokenizer", expect_tiny),
}


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_target):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_target)


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("template", list(CASES))
def test_supervised_tokens_are_exactly_what_the_target_generated(template, thinking, request):
    fixture, expect = CASES[template]
    tok = request.getfixturevalue(fixture)

    @settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(conversations())
    def check(conv):
        sample = tokenize_conversation(tok, conv, max_length=100_000, thinking=thinking)
        want = [w for w in expect(conv, thinking)]
        assert sample.spans == want
        # The tokens say the same: one run per non-empty span, decoding to it exactly.
        assert supervised_runs(tok, sample) == [w for w in want if w]
        assert tok.decode(sample.input_ids) == tok.apply_chat_template(
            [{k: v for k, v in m.items() if k != "thinking"} | (
                {"reasoning_content": m["thinking"], "thinking": m["thinking"]} if thinking and "thinking" in m else {})
             for m in conv["messages"]],
            tokenize=False, enable_thinking=thinking,
        )
        assert sample.mask_problem() is None, sample.mask_problem()

    check()
