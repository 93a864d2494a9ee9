import pytest
import torch
from draft_helpers import HIDDEN, VOCAB, make_batch, make_draft, reference_rows, tiny_config
from transformers import Qwen3ForCausalLM

from deepspec_core.drafts import (
    DRAFTS,
    build_draft,
    collate_samples,
    frozen_weights_from_model,
    load_frozen_weights,
)
from deepspec_core.drafts.base import block_metrics, load_target_layers
from deepspec_core.errors import CheckpointError, SpecError, TargetError
from deepspec_core.spec import RunSpec, algorithms

pytestmark = pytest.mark.unit

ALGOS = algorithms()


def test_collate_right_pads():
    b = make_batch(lengths=(5, 3))
    assert b.input_ids.shape == (2, 5) and b.aux_hidden.shape == (2, 5, 2, HIDDEN) and b.final_hidden.shape == (2, 5, HIDDEN)
    assert b.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert not b.loss_mask[1, 3:].any() and b.loss_mask.dtype == torch.bool
    assert (b.aux_hidden[1, 3:] == 0).all()
    assert b.to("cpu").input_ids.dtype == torch.int64
    with pytest.raises(ValueError):
        collate_samples([])


def test_block_metrics_tau():
    correct = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    accept = torch.tensor([[0.5, 0.5, 1.0], [1.0, 1.0, 1.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    m = block_metrics(correct, accept, valid)
    assert m["tau_greedy"].item() == pytest.approx((3 + 1) / 2)
    assert m["tau_expected"].item() == pytest.approx(((1 + 0.5 + 0.25 + 0.25) + (1 + 1 + 1)) / 2)
    assert m["acc_per_pos"].tolist() == pytest.approx([0.5, 1.0, 0.0])


@pytest.mark.parametrize("algo", ALGOS)
def test_registry_and_frozen_state(algo):
    d = make_draft(algo)
    assert type(d) is DRAFTS.get(algo) and d.algo == algo
    assert not d.embed_tokens.weight.requires_grad and not d.target_head.weight.requires_grad
    sd = d.trainable_state_dict()
    assert sd and not any(k.startswith(("embed_tokens", "target_head")) for k in sd)
    other = make_draft(algo, seed=1)
    other.load_trainable_state_dict(sd)
    for k, v in other.trainable_state_dict().items():
        assert torch.equal(v, sd[k]), k
    with pytest.raises(CheckpointError):
        other.load_trainable_state_dict({"nope": torch.zeros(1)})


def test_unknown_algo_is_a_spec_error():
    spec = RunSpec()
    object.__setattr__(spec.draft, "algo", "medusa")
    with pytest.raises(SpecError, match="medusa"):
        build_draft(spec, tiny_config(), torch.zeros(VOCAB, HIDDEN), torch.zeros(VOCAB, HIDDEN))


@pytest.mark.parametrize("tied", [True, False])
def test_frozen_weights_from_checkpoint_and_model(tmp_path, tied):
    cfg = tiny_config()
    cfg.tie_word_embeddings = tied
    model = Qwen3ForCausalLM(cfg)
    model.save_pretrained(tmp_path)
    embed, head = load_frozen_weights(tmp_path)
    assert torch.equal(embed, model.model.embed_tokens.weight.detach())
    assert torch.equal(head, model.lm_head.weight.detach())
    e2, h2 = frozen_weights_from_model(model)
    assert e2.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # shared, not copied
    assert torch.equal(h2, head)
    with pytest.raises(TargetError):
        load_frozen_weights(tmp_path / "missing")


def test_draft_shares_frozen_tensors():
    model = Qwen3ForCausalLM(tiny_config())
    spec = RunSpec.model_validate({"target": {"layer_ids": [0, 1], "mask_token_id": 3}, "draft": {"algo": "dflash", "num_layers": 1}})
    d = build_draft(spec, model.config, *frozen_weights_from_model(model))
    assert d.embed_tokens.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_other_families_build_and_train(family):
    from transformers import Gemma3TextConfig, LlamaConfig

    kw = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    cfg = LlamaConfig(**kw) if family == "llama" else Gemma3TextConfig(**kw)
    embed, head = torch.randn(VOCAB, HIDDEN), torch.randn(VOCAB, HIDDEN)
    for algo in ALGOS:
        spec = RunSpec.model_validate({"target": {"layer_ids": [0, 1], "mask_token_id": 5}, "draft": {"algo": algo, "num_layers": 1}})
        d = build_draft(spec, cfg, embed, head)
        assert d.family.name == family and d.family.native
        out = d.forward_train(make_batch())
        out.loss.backward()
        assert torch.isfinite(out.loss)
    assert type(d.layers[0].layer).__name__.lower().startswith(family.split("_")[0][:5])


def test_unsupported_family_falls_back_to_qwen3_layers():
    from transformers import GPT2Config

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=4)
    cfg.hidden_size, cfg.num_attention_heads = HIDDEN, 4
    spec = RunSpec.model_validate({"target": {"layer_ids": [0, 1], "mask_token_id": 5}, "draft": {"algo": "dflash", "num_layers": 1}})
    d = build_draft(spec, cfg, torch.randn(VOCAB, HIDDEN), torch.randn(VOCAB, HIDDEN))
    assert not d.family.native and type(d.layers[0].layer).__name__ == "Qwen3DecoderLayer"


def test_with_features_captured_from_a_real_target():
    from deepspec_core.targets import hf

    model = Qwen3ForCausalLM(tiny_config(layers=3)).eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        feats = hf.capture_features(model, ids, layer_ids=[0, 2], return_logits=True)
    samples = [dict(input_ids=ids[i], loss_mask=torch.ones(12, dtype=torch.bool), aux_hidden=feats.aux_hidden[i],
                    final_hidden=feats.final_hidden[i]) for i in range(2)]
    batch = collate_samples(samples)
    for algo in ALGOS:
        spec = RunSpec.model_validate({"target": {"layer_ids": [0, 2], "mask_token_id": 5}, "draft": {"algo": algo, "num_layers": 1}})
        d = build_draft(spec, model.config, *frozen_weights_from_model(model))
        # the frozen head reproduces the target's logits from the captured final hidden state
        assert torch.allclose(d.head_logits(feats.final_hidden), feats.logits, atol=1e-5)
        anchors = None if algo == "eagle3" else torch.tensor([[0, 4, 8], [1, 5, 9]])
        out = d.forward_train(batch) if anchors is None else d.forward_train(batch, anchors=anchors)
        want = block_metrics(*reference_rows(d, batch, anchors))  # rows rebuilt from the captured features
        assert torch.isfinite(out.loss) and torch.allclose(out.metrics["tau_expected"], want["tau_expected"], atol=1e-5)
        assert out.metrics["rows"] == want["rows"] > 0 and out.metrics["tokens"] == want["tokens"]


@pytest.mark.parametrize("algo", ALGOS)
def test_build_vocab_mapping_and_reduced_head(algo):
    from deepspec_core.drafts.base import build_vocab_mapping
    from deepspec_core.errors import DataError

    counts = torch.zeros(VOCAB)
    counts[[3, 50, 7, 90]] = torch.tensor([5.0, 9.0, 5.0, 1.0])
    d2t, t2d = build_vocab_mapping(counts, 3)
    assert t2d.nonzero().squeeze(-1).tolist() == [3, 7, 50]  # ties (3 and 7) kept by id order
    assert (torch.arange(3) + d2t).tolist() == [3, 7, 50]
    with pytest.raises(DataError):
        build_vocab_mapping(counts, VOCAB + 1)
    d = make_draft(algo, draft_vocab_size=3)
    d.set_vocab_mapping(d2t, t2d)
    assert torch.equal(d.draft_ids, torch.tensor([3, 7, 50]))
    assert torch.equal(d.draft_head.weight, d.target_head.weight[[3, 7, 50]])
    assert {"d2t", "t2d", "draft_head.weight"} <= set(d.trainable_state_dict())
    d.eval().start(torch.tensor([[1, 2, 3]]), torch.randn(1, 3, 2, HIDDEN))
    p = d.propose(torch.tensor([4]), 2)
    assert set(p.tokens.flatten().tolist()) <= {3, 7, 50}
    assert d.to_draft_labels(torch.tensor([7, 8, 50])).tolist() == [1, -100, 2]
    with pytest.raises(DataError, match="full vocabulary"):
        make_draft(algo).set_vocab_mapping(d2t, t2d)


def test_target_layers_load_by_name_and_misfits_name_the_tensor(tmp_path):
    model = Qwen3ForCausalLM(tiny_config(layers=2))
    model.save_pretrained(tmp_path)
    fresh = Qwen3ForCausalLM(tiny_config(layers=2))
    layers, norm = load_target_layers(tmp_path, [1], [fresh.model.layers[0]], norm_like=fresh.model.norm)
    assert set(layers[0]) == set(dict(fresh.model.layers[0].named_parameters()))
    assert torch.equal(layers[0]["mlp.up_proj.weight"], model.model.layers[1].mlp.up_proj.weight)
    assert torch.equal(norm["weight"], model.model.norm.weight)
    with pytest.raises(TargetError, match=r"'model\.layers\.2\.self_attn\.q_proj\.weight' is missing"):
        load_target_layers(tmp_path, [2], [fresh.model.layers[0]])
    wider = tiny_config(layers=1)
    wider.intermediate_size *= 2
    with pytest.raises(TargetError, match=r"'model\.layers\.0\.mlp\.\w+_proj\.weight' is \(\d+, \d+\), the draft's"):
        load_target_layers(tmp_path, [0], [Qwen3ForCausalLM(wider).model.layers[0]])
    with pytest.raises(TargetError, match=r"no \*\.safetensors in"):
        load_target_layers(tmp_path / "missing", [0], [fresh.model.layers[0]])
