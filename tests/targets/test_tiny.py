"""The embedded tiny target: loadable with Auto classes, Qwen3-style chat template, deterministic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import groupby
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.errors import TargetError
from deepspec_core.targets import tiny
from deepspec_core.targets import tiny_data as td

pytestmark = pytest.mark.integration

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Add two numbers."},
    {"role": "assistant", "content": "def add(a, b):\n    return a + b", "thinking": "Use +."},
]


@pytest.fixture(scope="module")
def tok(tiny_target):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_target)


def test_loads_and_generates_in_a_fresh_process(tiny_target, tok):
    # A separate interpreter proves the directory alone is enough (no state from this process).
    code = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
d = sys.argv[1]
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d)
enc = tok.apply_chat_template([{"role": "user", "content": "Return the larger of two numbers."}],
    add_generation_prompt=True, enable_thinking=False, return_tensors="pt", return_dict=True)
out = model.generate(**enc, max_new_tokens=24, do_sample=False)
new = out[0, enc["input_ids"].shape[1]:]
print(json.dumps({"arch": model.config.architectures, "layers": model.config.num_hidden_layers,
    "eos": model.generation_config.eos_token_id, "pad": model.generation_config.pad_token_id,
    "im_end": tok.convert_tokens_to_ids("<|im_end|>"), "eot": tok.convert_tokens_to_ids("<|endoftext|>"),
    "prompt": enc["input_ids"][0].tolist(), "new": new.tolist(), "text": tok.decode(new, skip_special_tokens=True)}))
"""
    res = subprocess.run(
        [sys.executable, "-c", code, str(tiny_target)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["arch"] == ["Qwen3ForCausalLM"] and got["layers"] == 4
    assert got["eos"] == got["im_end"] and got["pad"] == got["eot"]
    # The same greedy continuation as deepspec's own decoder (what eval and regen rest on).
    import torch
    from transformers import AutoModelForCausalLM

    from deepspec_core.decode.speculative import target_generate

    model = AutoModelForCausalLM.from_pretrained(tiny_target).eval()
    want = target_generate(model, torch.tensor([got["prompt"]]), 24, eos_token_ids=[got["im_end"]]).tokens
    assert got["new"] == want and got["text"] == tok.decode(want, skip_special_tokens=True)


def test_special_tokens(tok):
    ids = tok.convert_tokens_to_ids(td.SPECIAL_TOKENS)
    assert ids == list(range(len(td.SPECIAL_TOKENS)))  # one id each, below the learned merges
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.mask_token == "<|mask|>" and tok.mask_token_id == 5
    for t in td.SPECIAL_TOKENS:
        assert tok(t, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(t)]
    # Like Qwen3: thinking markers survive skip_special_tokens, chat markers do not.
    assert tok.decode([1, 3, 4, 2], skip_special_tokens=True) == "<think></think>"


def test_chat_template_renders_turns_and_round_trips(tok):
    text = tok.apply_chat_template(CONV, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAdd two numbers.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nUse +.\n</think>\n\ndef add(a, b):\n    return a + b<|im_end|>\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # The builder renders training chats with plain jinja; it must agree with transformers.
    from jinja2 import Template

    assert Template(td.CHAT_TEMPLATE).render(messages=CONV, add_generation_prompt=False) == text


def test_generation_prompt_and_thinking_switch(tok):
    msgs = CONV[:2]
    on = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert on.endswith("<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n")
    assert off == on + "<think>\n\n</think>\n\n"
    # Without thinking, a rendered answer is exactly the thinking-off prompt + answer + <|im_end|>:
    # the assistant span is recoverable by prefix, in text and in tokens.
    plain = [*msgs, {"role": "assistant", "content": "def add(a, b):\n    return a + b"}]
    full = tok.apply_chat_template(plain, tokenize=False)
    assert full == off + plain[-1]["content"] + "<|im_end|>\n"
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    off_ids = tok(off, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(off_ids)] == off_ids


def test_earlier_assistant_turns_drop_thinking(tok):
    msgs = [
        CONV[1],
        {"role": "assistant", "content": "a", "thinking": "hidden"},
        {"role": "user", "content": "b"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert "hidden" not in text and "<think>" not in text


def test_the_loss_mask_supervises_exactly_the_answers_under_the_tiny_template(tok):
    from deepspec_core.data.tokenize import tokenize_conversation

    def supervised(sample) -> list[str]:  # decoded text of each maximal run of supervised tokens
        pairs = zip(sample.input_ids, sample.loss_mask, strict=True)
        return [tok.decode([t for t, _ in run]) for m, run in groupby(pairs, key=lambda p: bool(p[1])) if m]

    conv = {"id": "t", "messages": [
        {"role": "user", "content": "Write a function that adds two numbers."},
        {"role": "assistant", "content": "def add(a, b):\n    return a + b", "thinking": "easy"},
        {"role": "user", "content": "Now subtract."},
        {"role": "assistant", "content": "def sub(a, b):\n    return a - b", "thinking": "also easy"},
    ]}
    off = tokenize_conversation(tok, conv, max_length=4096, thinking=False)
    assert supervised(off) == ["def add(a, b):\n    return a + b<|im_end|>", "def sub(a, b):\n    return a - b<|im_end|>"]
    on = tokenize_conversation(tok, conv, max_length=4096, thinking=True)
    assert supervised(on) == [
        "def add(a, b):\n    return a + b<|im_end|>",
        "<think>\nalso easy\n</think>\n\ndef sub(a, b):\n    return a - b<|im_end|>",
    ]
    assert off.coverage == on.coverage == 1.0


def test_tiny_presets_use_the_tiny_tokenizers_mask_token(tok):
    from deepspec_core.spec import load_spec

    assert load_spec("tiny-dflash").target.mask_token_id == tok.convert_tokens_to_ids("<|mask|>")


def test_info_file(tiny_target):
    info = tiny.read_info(tiny_target)
    assert info["name"] == "tiny-quick" and info["vocab_size"] == 2048
    assert info["build"]["recipe"]["num_layers"] == 4
    assert 0.5e6 < info["num_parameters"] < 2e6
    ppl = info["heldout_perplexity"]
    # Trained: far below the 2048 of a uniform guess over the vocabulary.
    assert 1 < ppl["chat_assistant"] < 1000 and 1 < ppl["code"] < 1000
    assert info["heldout_tokens"]["chat_assistant"] > 0


def test_cache_reuse_and_names(tiny_target):
    assert tiny_target.parent == Path(os.environ["DEEPSPEC_HOME"]) / "targets"
    assert tiny_target.name.startswith("tiny-quick-")
    assert tiny.ensure_tiny_target("quick", seed=0) == tiny_target  # cached, no rebuild
    assert tiny.resolve_tiny("tiny-quick") == tiny_target
    assert tiny.resolve_tiny("Qwen/Qwen3-4B") is None
    assert tiny.build_key("quick", 0)[0] != tiny.build_key("quick", 1)[0]
    assert not list(tiny_target.parent.glob(".*tmp-*"))  # no half-built directories left behind


def test_publish_loser_keeps_winner(tmp_path):
    final = tmp_path / "tiny-x"
    final.mkdir()
    (final / tiny.INFO_FILE).write_text("{}")
    loser = tmp_path / ".tiny-x.tmp-1"
    loser.mkdir()
    (loser / "model.safetensors").write_text("other")
    assert tiny._publish(loser, final) == final
    assert not loser.exists() and (final / tiny.INFO_FILE).read_text() == "{}"


def test_unknown_size_and_non_empty_out(tmp_path):
    with pytest.raises(TargetError, match="unknown tiny target size 'huge'"):
        tiny.build_tiny_target(tmp_path / "x", size="huge")
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(TargetError, match="not empty"):
        tiny.build_tiny_target(tmp_path, size="quick")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_cli_without_out_prints_cached_path(tiny_target):
    res = CliRunner().invoke(app, ["target", "tiny", "--size", "quick"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(tiny_target)


def test_same_seed_gives_identical_build(tiny_target, tmp_path):
    # Second build through the CLI: covers `--out` and proves determinism (weights + tokenizer).
    from safetensors.torch import load_file

    out = tmp_path / "again"
    res = CliRunner().invoke(app, ["target", "tiny", "--out", str(out), "--size", "quick", "--seed", "0"])
    assert res.exit_code == 0, res.output
    assert "perplexity" in res.output
    a, b = load_file(tiny_target / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].equal(b[k]), k
    assert (tiny_target / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()
    assert tiny.read_info(out)["heldout_perplexity"] == tiny.read_info(tiny_target)["heldout_perplexity"]
