import json

import pytest

from deepspec_core.data.tokenize import (
    TokenizeStats,
    iter_tokenized,
    render_chat,
    split_thinking,
    tokenize_conversation,
)

pytestmark = pytest.mark.unit

CONV = {
    "id": "c",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital.", "thinking": "The capital of France"},
        {"role": "user", "content": "And 1 + 2?"},
        {"role": "assistant", "content": "It is 3.", "thinking": "step by step"},
    ],
    "meta": {},
}


def supervised_runs(tok, sample) -> list[str]:
    """Decoded text of each maximal run of supervised tokens."""
    runs, cur = [], []
    for tid, m in zip(sample.input_ids, sample.loss_mask, strict=True):
        if m:
            cur.append(tid)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_qwen3_thinking_off_masks_answers_and_im_end(qwen_tok):
    s = tokenize_conversation(qwen_tok, CONV, max_length=1000, thinking=False)
    assert supervised_runs(qwen_tok, s) == ["Paris is the capital.<|im_end|>", "It is 3.<|im_end|>"]
    # Rendering is the template's own: no injected system prompt, empty think block only in the prompt.
    text = qwen_tok.decode(s.input_ids)
    assert text == render_chat(qwen_tok, CONV["messages"], thinking=False, add_generation_prompt=False)
    assert text.count("<|im_start|>system") == 1 and "step by step" not in text
    assert s.coverage == 1.0 and not s.truncated


def test_qwen3_thinking_on_supervises_the_rendered_think_block(qwen_tok):
    s = tokenize_conversation(qwen_tok, CONV, max_length=1000, thinking=True)
    # Qwen3 drops the reasoning of turns before the last user query; the last turn keeps it.
    assert supervised_runs(qwen_tok, s) == [
        "Paris is the capital.<|im_end|>",
        "<think>\nstep by step\n</think>\n\nIt is 3.<|im_end|>",
    ]
    assert s.coverage == 1.0 and s.thinking


def test_llama3_multi_turn(llama_tok):
    s = tokenize_conversation(llama_tok, CONV, max_length=1000, thinking=False)
    assert llama_tok.decode(s.input_ids[:1]) == "<|begin_of_text|>"  # the template's BOS, not doubled
    assert llama_tok.decode(s.input_ids[:2]) != "<|begin_of_text|><|begin_of_text|>"
    assert supervised_runs(llama_tok, s) == ["Paris is the capital.<|eot_id|>", "It is 3.<|eot_id|>"]
    assert s.num_loss_tokens == s.num_assistant_tokens


def test_answer_repeated_in_prompt_is_not_matched_there(llama_tok):
    conv = {"id": "r", "messages": [{"role": "user", "content": "Say: 42"}, {"role": "assistant", "content": "42"}]}
    s = tokenize_conversation(llama_tok, conv, max_length=100, thinking=False)
    assert supervised_runs(llama_tok, s) == ["42<|eot_id|>"]
    last = max(i for i, m in enumerate(s.loss_mask) if m)
    assert last == len(s.input_ids) - 1


def test_truncation_keeps_mask_aligned(qwen_tok):
    full = tokenize_conversation(qwen_tok, CONV, max_length=1000, thinking=False)
    cut = tokenize_conversation(qwen_tok, CONV, max_length=full.num_tokens - 3, thinking=False)
    assert cut.truncated and cut.num_tokens == full.num_tokens - 3
    assert cut.input_ids == full.input_ids[:-3] and cut.loss_mask == full.loss_mask[:-3]
    assert cut.num_loss_tokens == sum(full.loss_mask[:-3]) < full.num_loss_tokens
    assert cut.coverage == full.coverage  # coverage describes the mask, not the truncation


def test_iter_tokenized_counts_skips(qwen_tok, tmp_path):
    rows = [
        CONV,
        {"id": "prompt-only", "messages": [{"role": "user", "content": "hi"}], "meta": {}},
        {"id": "short", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "meta": {}},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = TokenizeStats()
    out = list(iter_tokenized(path, qwen_tok, max_length=1000, thinking=False, min_loss_tokens=4, stats=stats))
    assert [cid for cid, _ in out] == ["c"]
    assert stats.seen == 3 and stats.kept == 1
    assert dict(stats.skipped) == {"no assistant turn": 1, "too few loss tokens": 1}


def test_split_thinking():
    assert split_thinking("<think>\nhmm\n</think>\n\nAnswer") == ("Answer", "hmm")
    assert split_thinking("<think>\n\n</think>\n\nAnswer") == ("Answer", None)
    assert split_thinking(" plain ") == ("plain", None)


def test_reported_mask_cases_supervise_exactly_the_answer(qwen_tok, chatml_tok, llama_tok):
    """The cases text search got wrong, each with its right supervised text."""
    def runs(tok, messages, thinking=False, reasons=None):
        conv = {"id": "x", "messages": messages, "regen": {"finish_reasons": reasons or []}}
        return supervised_runs(tok, tokenize_conversation(tok, conv, 10_000, thinking))

    q = {"role": "user", "content": "What is 7 + 8?"}
    # A thinking answer that restates its final answer inside the reasoning: all of both.
    restated = {"role": "assistant", "content": "The answer is 15.", "thinking": "7 + 8 = 15. The answer is 15."}
    assert runs(qwen_tok, [q, restated], thinking=True) == [
        "<think>\n7 + 8 = 15. The answer is 15.\n</think>\n\nThe answer is 15.<|im_end|>"]
    # An answer equal to a word of the template header supervises the answer, not the header.
    assert runs(chatml_tok, [q, {"role": "assistant", "content": "assistant"}]) == ["assistant<|im_end|>"]
    assert runs(qwen_tok, [{"role": "user", "content": "assistant"}, {"role": "assistant", "content": "user"}]) == [
        "user<|im_end|>"]
    # Trailing whitespace: the end-of-turn token is still supervised, right after it.
    assert runs(chatml_tok, [q, {"role": "assistant", "content": "15 \n"}]) == ["15 \n<|im_end|>"]
    # An empty answer supervises its own end-of-turn token, never the user's.
    assert runs(llama_tok, [q, {"role": "assistant", "content": ""}]) == ["<|eot_id|>"]
    # An answer cut by max_tokens: the target never ended it, so no end-of-turn token.
    assert runs(chatml_tok, [q, {"role": "assistant", "content": "Let me"}], reasons=["length"]) == ["Let me"]


def test_empty_answers_and_bad_masks_are_skipped_by_reason(qwen_tok, tmp_path):
    rows = [
        CONV,
        {"id": "empty", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
        {"id": "cut-thinking", "messages": [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "", "thinking": "hmm, let me think a lot"}],
         "regen": {"finish_reasons": ["length"]}},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = TokenizeStats()
    off = [cid for cid, _ in iter_tokenized(path, qwen_tok, 1000, thinking=False, stats=stats)]
    assert off == ["c"] and dict(stats.skipped) == {"empty assistant answer": 2}
    stats = TokenizeStats()
    on = dict(iter_tokenized(path, qwen_tok, 1000, thinking=True, stats=stats))
    # With thinking on, a reasoning-only answer cut by max_tokens is a valid (truncated) sample.
    assert list(on) == ["c", "cut-thinking"] and dict(stats.skipped) == {"empty assistant answer": 1}
    assert on["cut-thinking"].spans == ["<think>\nhmm, let me think a lot"]  # cut inside its reasoning
    assert "regenerate the empty answers" in stats.describe_skips()


def test_drop_truncated_skips_cut_answers(qwen_tok, tmp_path):
    rows = [CONV, {"id": "cut", "messages": [{"role": "user", "content": "Tell me everything."},
                                             {"role": "assistant", "content": "Once upon a time there"}],
                   "regen": {"finish_reasons": ["length"]}}]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = dict(iter_tokenized(path, qwen_tok, 1000, thinking=False))
    assert kept["cut"].spans == ["Once upon a time there"]  # kept, no end-of-turn token
    stats = TokenizeStats()
    assert [cid for cid, _ in iter_tokenized(path, qwen_tok, 1000, False, stats=stats, drop_truncated=True)] == ["c"]
    assert dict(stats.skipped) == {"answer cut by max_tokens": 1}
