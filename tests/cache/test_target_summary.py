"""The target summary of a format-2 cache: written by `deepspec data cache`, equal to what training
would compute from the stored features, and training on it gives the weights of training without it
(a format-1 cache, which is still read and resumed as format 1)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from deepspec_core import losses
from deepspec_core.cache import format as fmt
from deepspec_core.cache.codecs import get_codec
from deepspec_core.cache.reader import FeatureCache
from deepspec_core.cache.writer import build_cache
from deepspec_core.spec import load_spec
from deepspec_core.targets.hf import load_target
from deepspec_core.train.loop import Runtime, train

pytestmark = pytest.mark.integration


def _head(tiny_target):
    model = load_target(str(tiny_target), dtype="float32").model
    return model.get_output_embeddings().weight.detach()


def _spec(tiny_target, chat_file, cache, *sets):
    return load_spec("tiny-dflash", [f"target.model='{tiny_target}'", f"data.train=['{chat_file}']",
                                     "data.max_length=96", f"cache.path='{cache}'", *sets])


def test_the_cache_stores_the_summary_of_its_decoded_final_hidden_state(feature_cache, tiny_target):
    """The session's cache (built by build_cache, the `deepspec data cache` path) is format 2, names
    the head it used, and every position's logsumexp / argmax equal the full-vocabulary product on
    the final hidden state the reader returns."""
    cache = FeatureCache(feature_cache)
    assert cache.manifest["format_version"] == 2 and fmt.read_index(feature_cache / fmt.INDEX) is not None
    assert cache.target_summary == {"dtype": "float32", "softcap": None}
    head = _head(tiny_target)
    for i in (0, len(cache) // 2, len(cache) - 1):
        s = cache[i]
        lse, top = losses.target_summary(s["final_hidden"], head, None)
        torch.testing.assert_close(s["target_lse"], lse, rtol=1e-5, atol=1e-5)
        assert torch.equal(s["target_top"], top) and s["target_lse"].shape == s["input_ids"].shape
    cache.use_summary = False  # what training sets where the head differs: samples come without it
    assert "target_lse" not in cache[0]


def test_a_lossy_final_codec_summarises_what_it_decodes(tiny_target, chat_file, tmp_path):
    """With fp8 on the final hidden state the summary is of the decoded (rounded) state, which is what
    training multiplies — not of the target's exact output."""
    out = tmp_path / "int4-fp8"
    spec = _spec(tiny_target, chat_file, out)
    build_cache(spec, codec="int4-fp8", progress=False)
    cache = FeatureCache(out)
    assert not get_codec("int4-fp8").final.lossless
    s = cache[0]
    lse, top = losses.target_summary(s["final_hidden"], _head(tiny_target), None)
    torch.testing.assert_close(s["target_lse"], lse, rtol=1e-5, atol=1e-5)
    assert torch.equal(s["target_top"], top)


def _train(tiny_target, chat_file, cache, root, algo, *sets, messages=None):
    spec = load_spec(f"tiny-{algo}", [
        f"target.model='{tiny_target}'", f"data.train=['{chat_file}']", "data.max_length=96",
        f"cache.path='{cache}'", f"output.root='{root}'", "draft.draft_vocab_size=64",
        "train.global_batch_size=8", "train.micro_batch_size=4", "train.max_steps=2", "train.val_samples=8",
        "train.val_every=2", "train.save_every=2", "train.log_every=1", "train.tensorboard=false", *sets,
    ])
    say = messages.append if messages is not None else (lambda _m: None)
    return train(spec, Runtime(progress=False, say=say))


@pytest.fixture(scope="module")
def format1_cache(feature_cache, tiny_target, chat_file, tmp_path_factory):
    """A cache an earlier deepspec started (its plan says format 1), finished by this one: it stays
    format 1, without the summary, and holds the same features as the format-2 cache."""
    out = tmp_path_factory.mktemp("v1") / "features"
    plan = json.loads((feature_cache / fmt.PLAN).read_text())
    plan.pop("target_summary")
    plan["format_version"] = 1
    out.mkdir()
    (out / fmt.PLAN).write_text(json.dumps(plan))
    build_cache(_spec(tiny_target, chat_file, out), progress=False)
    return out


def test_a_format1_cache_is_resumed_as_format1_and_read(format1_cache, feature_cache):
    old, new = FeatureCache(format1_cache), FeatureCache(feature_cache)
    assert old.manifest["format_version"] == 1 and "target_summary" not in old.manifest
    assert old.target_summary is None and "target_lse" not in old[0]
    for i in (0, len(old) - 1):
        assert torch.equal(old[i]["final_hidden"], new[i]["final_hidden"])
    assert (old.manifest["counts"], len(old)) == (new.manifest["counts"], len(new))


@pytest.mark.parametrize("algo", ["eagle3", "dflash", "dspark"])
def test_training_on_the_summary_skips_the_full_vocabulary_product_and_changes_nothing(
        algo, feature_cache, format1_cache, tiny_target, chat_file, tmp_path, monkeypatch):
    """Reduced draft vocabulary (64 of the target's ids): two steps on the format-2 cache give the
    weights and validation metrics of two steps on the format-1 cache, and with the summary no
    product against the full head happens (only the 64 draft rows); the format-1 run says why it is
    slower and how to fix it."""
    widths: list[int] = []
    real = losses._target_logits

    def spy(hidden, weight, softcap):
        widths.append(weight.shape[0])
        return real(hidden, weight, softcap)

    monkeypatch.setattr(losses, "_target_logits", spy)
    notes: list[str] = []
    old = _train(tiny_target, chat_file, format1_cache, tmp_path / "v1", algo, messages=notes)
    vocab = _head(tiny_target).shape[0]
    assert widths and set(widths) == {vocab}
    assert any("no target summary (format 1)" in n and "deepspec data cache" in n for n in notes)
    widths.clear()
    notes.clear()
    new = _train(tiny_target, chat_file, feature_cache, tmp_path / "v2", algo, messages=notes)
    assert widths and set(widths) == {64}
    assert not any("target summary" in n for n in notes)
    a, b = (load_file(str(r.checkpoint / "model.safetensors")) for r in (old, new))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    for k in ("loss", "tau_greedy", "tau_expected"):
        assert new.val[k] == pytest.approx(old.val[k], rel=1e-4, abs=1e-6), k


def test_a_summary_from_another_head_dtype_is_not_used(feature_cache, tiny_target, chat_file, tmp_path, monkeypatch):
    """Training in bf16 target precision on a cache summarised with the fp32 head: the summary is
    left unread (one note saying so) and the full product is computed, as without one."""
    widths: list[int] = []
    real = losses._target_logits
    monkeypatch.setattr(losses, "_target_logits", lambda h, w, c: (widths.append(w.shape[0]), real(h, w, c))[1])
    notes: list[str] = []
    _train(tiny_target, chat_file, feature_cache, tmp_path, "dflash", "target.dtype='bfloat16'", "train.max_steps=1",
           messages=notes)
    assert [n for n in notes if "target summary" in n] == [
        "note: the cache's target summary was computed with a {'dtype': 'float32', 'softcap': None} head, this "
        "run's is {'dtype': 'bfloat16', 'softcap': None}: computing the target's full-vocabulary logits every step instead"]
    assert widths and set(widths) == {_head(tiny_target).shape[0]}
