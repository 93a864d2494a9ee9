"""`target import`: GGUF files (a tiny one written here; SmolLM2 when its wheel is present) and HF dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepspec_core.errors import TargetError
from deepspec_core.targets.importer import import_target

pytestmark = pytest.mark.integration

gguf = pytest.importorskip("gguf")

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_bpe(n_merges: int = 40) -> tuple[list[str], list[str]]:
    """A small GPT-2-style byte-level vocabulary: specials, the 256 byte symbols, a few merges."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["def add(a, b):\n    return a + b\n"] * 50, vocab_size=256 + 3 + n_merges,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False)
    import json

    model = json.loads(tok._tokenizer.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return [t for t, _ in vocab], merges


def write_tiny_llama_gguf(path: Path, arch: str = "llama", hidden: int = 32, layers: int = 2) -> None:
    tokens, merges = _byte_bpe()
    vocab, inter, heads, kv = len(tokens), 64, 4, 2
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(TEMPLATE)

    def t(name, *shape):
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32) * 0.05)

    t("token_embd.weight", vocab, hidden)
    t("output.weight", vocab, hidden)
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    hd = hidden // heads
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        t(f"blk.{i}.attn_q.weight", hidden, hidden)
        t(f"blk.{i}.attn_k.weight", kv * hd, hidden)
        t(f"blk.{i}.attn_v.weight", kv * hd, hidden)
        t(f"blk.{i}.attn_output.weight", hidden, hidden)
        t(f"blk.{i}.ffn_gate.weight", inter, hidden)
        t(f"blk.{i}.ffn_up.weight", inter, hidden)
        t(f"blk.{i}.ffn_down.weight", hidden, inter)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_import_writes_a_standard_hf_directory(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(src)
    res = import_target(src, tmp_path / "out", dtype="float32")
    assert res.architecture == "llama" and res.num_layers == 2 and res.hidden_size == 32
    assert res.quantization == ["F32"] and res.has_chat_template
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert "quantization_config" not in (out / "config.json").read_text()
    model = AutoModelForCausalLM.from_pretrained(out)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(ids).logits, ref(ids).logits)
    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_hf_directory_import_converts_dtype(tmp_path):
    from transformers import AutoModelForCausalLM

    src = tmp_path / "g" / "tiny.gguf"
    src.parent.mkdir()
    write_tiny_llama_gguf(src)
    import_target(src.parent, tmp_path / "fp32", dtype="float32")  # a directory with one .gguf
    res = import_target(tmp_path / "fp32", tmp_path / "bf16", dtype="bfloat16")
    assert res.quantization == []
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16


def test_clear_errors(tmp_path):
    with pytest.raises(TargetError, match="does not exist"):
        import_target(tmp_path / "missing.gguf", tmp_path / "o")
    bert = tmp_path / "bert.gguf"
    w = gguf.GGUFWriter(str(bert), "bert")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(TargetError, match="architecture 'bert'.*not supported"):
        import_target(bert, tmp_path / "o")
    many = tmp_path / "many"
    many.mkdir()
    (many / "a.gguf").write_bytes(b"")
    (many / "b.gguf").write_bytes(b"")
    with pytest.raises(TargetError, match="holds 2 GGUF files") as info:
        import_target(many, tmp_path / "o")
    assert "--gguf-file" in info.value.hint
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(TargetError, match="not empty"):
        import_target(bert, tmp_path / "full")


@pytest.mark.slow
def test_smollm2_import(smollm2_gguf, tmp_path):
    res = import_target(smollm2_gguf, tmp_path / "smol")
    assert (res.architecture, res.num_layers, res.hidden_size, res.vocab_size) == ("llama", 30, 576, 49152)
    assert res.has_chat_template


def test_cli_import(tmp_path):
    from typer.testing import CliRunner

    from deepspec_cli.main import app

    src = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(src)
    res = CliRunner().invoke(app, ["target", "import", str(src), "--out", str(tmp_path / "o"), "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    assert "llama" in res.output and (tmp_path / "o" / "model.safetensors").is_file()
    res = CliRunner().invoke(app, ["target", "import", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "not empty" in res.output
