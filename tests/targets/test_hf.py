"""The capture function against output_hidden_states, with padding, for Qwen3 and Llama configs."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from deepspec_core.errors import TargetError
from deepspec_core.targets.hf import capture_features, get_lm_head, load_target, num_hidden_layers

pytestmark = pytest.mark.unit


def _qwen3():
    cfg = Qwen3Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
    )
    return Qwen3ForCausalLM(cfg).eval()


def _llama():
    cfg = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(params=["qwen3", "llama"])
def model(request):
    torch.manual_seed(0)
    return _qwen3() if request.param == "qwen3" else _llama()


def test_matches_output_hidden_states(model):
    ids = torch.randint(0, 97, (2, 11))
    layer_ids = [0, num_hidden_layers(model.config) - 2]
    with torch.no_grad():
        feats = capture_features(model, ids, layer_ids=layer_ids, return_logits=True)
        ref = model(ids, output_hidden_states=True)
    assert feats.aux_hidden.shape == (2, 11, 2, 32)
    for k, i in enumerate(layer_ids):
        torch.testing.assert_close(feats.aux_hidden[:, :, k], ref.hidden_states[i + 1])
    torch.testing.assert_close(feats.final_hidden, ref.hidden_states[-1])
    torch.testing.assert_close(feats.logits, ref.logits)
    torch.testing.assert_close(get_lm_head(model)(feats.final_hidden), ref.logits)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_invariant_for_real_tokens(model, side):
    a, b = torch.randint(1, 97, (7,)), torch.randint(1, 97, (4,))
    pad = torch.zeros(3, dtype=torch.long)
    if side == "right":
        ids = torch.stack([a, torch.cat([b, pad])])
        mask = torch.stack([torch.ones(7), torch.cat([torch.ones(4), torch.zeros(3)])]).long()
        sl = slice(0, 4)
    else:
        ids = torch.stack([a, torch.cat([pad, b])])
        mask = torch.stack([torch.ones(7), torch.cat([torch.zeros(3), torch.ones(4)])]).long()
        sl = slice(3, 7)
    with torch.no_grad():
        batched = capture_features(model, ids, mask, layer_ids=[0, 1])
        alone_a = capture_features(model, a[None], layer_ids=[0, 1])
        alone_b = capture_features(model, b[None], layer_ids=[0, 1])
    torch.testing.assert_close(batched.aux_hidden[0], alone_a.aux_hidden[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.aux_hidden[1, sl], alone_b.aux_hidden[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.final_hidden[1, sl], alone_b.final_hidden[0], atol=1e-5, rtol=1e-5)


def test_incremental_with_cache_equals_full(model):
    ids = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        full = capture_features(model, ids, layer_ids=[1], return_logits=True)
        cache = DynamicCache(config=model.config)
        first = capture_features(model, ids[:, :8], layer_ids=[1], past_key_values=cache, use_cache=True)
        second = capture_features(model, ids[:, 8:], layer_ids=[1], past_key_values=first.past_key_values,
                                  use_cache=True, return_logits=True)
    torch.testing.assert_close(second.aux_hidden, full.aux_hidden[:, 8:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second.logits, full.logits[:, 8:], atol=1e-5, rtol=1e-5)


def test_layer_beyond_depth_is_rejected(model):
    with pytest.raises(TargetError, match="beyond the target's depth"):
        capture_features(model, torch.zeros(1, 3, dtype=torch.long), layer_ids=[99])


def test_load_from_local_directory(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    net = _qwen3()
    net.save_pretrained(tmp_path)
    vocab = {f"t{i}": i for i in range(97)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="t1").save_pretrained(tmp_path)
    target = load_target(str(tmp_path), dtype="float32", device="cpu")
    assert not any(p.requires_grad for p in target.model.parameters())
    assert target.tokenizer.pad_token_id == target.tokenizer.eos_token_id == 1  # no pad token: EOS pads ("t1")
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(target.model(ids).logits, net(ids).logits)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(TargetError, match="does not exist"):
        load_target(str(tmp_path / "nope"))
