"""Data order: a pure function of (seed, epoch), the same global batches for any process count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepspec_core.errors import SpecError
from deepspec_core.train.data import DataPlan, StepBatchSampler, epoch_permutation, holdout_sizes, val_batches

pytestmark = pytest.mark.integration


def test_permutation_is_deterministic_and_changes_with_epoch_and_seed():
    a = epoch_permutation(100, seed=3, epoch=0)
    assert np.array_equal(a, epoch_permutation(100, seed=3, epoch=0))
    assert sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, epoch_permutation(100, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_permutation(100, seed=4, epoch=0))


def test_global_batch_is_the_same_whatever_the_process_count():
    one = DataPlan(num_samples=50, global_batch=8, micro_batch=2, world_size=1, seed=0)
    two = DataPlan(num_samples=50, global_batch=8, micro_batch=2, world_size=2, seed=0)
    assert (one.accum, two.accum) == (4, 2)
    for step in range(10):  # crosses the epoch boundary (6 steps per epoch)
        single = one.micro_batches(step, 0)
        # Micro-batch i of the global batch is (micro-step i // world, rank i % world).
        multi = [two.micro_batches(step, r)[a] for a in range(two.accum) for r in range(2)]
        assert single == multi
        assert len({i for mb in single for i in mb}) == 8


def test_epoch_covers_each_sample_at_most_once_and_drops_the_tail():
    plan = DataPlan(num_samples=50, global_batch=8, micro_batch=4, world_size=1, seed=1)
    assert plan.steps_per_epoch == 6
    seen = [i for s in range(6) for mb in plan.micro_batches(s, 0) for i in mb]
    assert len(seen) == len(set(seen)) == 48
    assert plan.position(13) == (2, 1)


def test_sampler_resumes_where_it_stopped():
    plan = DataPlan(num_samples=40, global_batch=4, micro_batch=2, world_size=1, seed=7)
    full = list(StepBatchSampler(plan, 0, 0, 25))
    tail = list(StepBatchSampler(plan, 0, 17, 25))
    assert len(full) == 50 and full[34:] == tail


def test_fewer_samples_than_a_batch_still_yields_full_batches():
    plan = DataPlan(num_samples=3, global_batch=8, micro_batch=4, world_size=1, seed=0)
    assert [len(mb) for mb in plan.micro_batches(0, 0)] == [4, 4]


def test_val_batches_split_over_processes():
    idx = list(range(10))
    parts = [val_batches(idx, 3, r, 2) for r in range(2)]
    flat = sorted(i for p in parts for mb in p for i in mb)
    assert flat == idx


def test_holdout_needs_training_samples():
    assert holdout_sizes(10, 3) == (7, 3)
    with pytest.raises(SpecError, match="val_samples"):
        holdout_sizes(3, 3)


def test_online_batches_equal_the_cache_path_features(make_spec):
    """Online training keeps the padded batch on the device; its features are those the cache writer gets."""
    from deepspec_core.cache.online import online_dataset
    from deepspec_core.drafts.base import collate_samples
    from deepspec_core.targets.hf import load_target_from_spec
    from deepspec_core.train.data import online_batch

    spec = make_spec("dflash")
    ds = online_dataset(spec, load_target_from_spec(spec.target, device="cpu"))
    idx = [3, 0, 7]
    a, b = online_batch(ds, idx), collate_samples(ds.get_batch(idx))
    for name in ("input_ids", "attention_mask", "loss_mask", "aux_hidden", "final_hidden"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_reduced_eagle3_vocabulary_comes_from_the_training_tokens(make_spec):
    from deepspec_core.train.data import build_parts, init_vocab_mapping

    spec = make_spec("eagle3", "draft.draft_vocab_size=300")
    parts = build_parts(spec, torch.device("cpu"), say=lambda m: None)
    init_vocab_mapping(parts, spec)
    counts = parts.loss_token_counts()
    kept = parts.draft.t2d
    assert int(kept.sum()) == 300
    assert bool(kept[counts.argmax()]) and counts[kept].min() >= counts[~kept].max()


@pytest.mark.parametrize("source", ["online", "cache"])
def test_data_eval_is_the_validation_set(make_spec, chat_file, tiny_target, tmp_path, source):
    """With data.eval, validation reads its conversations (cached after the training files, never
    trained on); the training set is data.train whole."""
    import json

    from transformers import AutoTokenizer

    from deepspec_core.cache.writer import build_cache
    from deepspec_core.data.tokenize import iter_tokenized
    from deepspec_core.train.data import build_parts

    rows = [json.loads(x) for x in chat_file.read_text().splitlines()]
    evalf = tmp_path / "eval.jsonl"
    evalf.write_text("".join(json.dumps({**r, "id": f"ev-{r['id']}"}) + "\n" for r in rows[:12]))
    sets = [f"data.eval=['{evalf}']", "train.val_samples=5"]
    if source == "cache":
        sets += ["cache.online=false", f"cache.path='{tmp_path / 'features'}'"]
        build_cache(make_spec("dflash", *sets))
    said: list[str] = []
    parts = build_parts(make_spec("dflash", *sets), torch.device("cpu"), said.append)
    tok = AutoTokenizer.from_pretrained(tiny_target)
    n_train = sum(1 for _ in iter_tokenized(chat_file, tok, 96, False, min_loss_tokens=8))
    first_eval = next(iter_tokenized(evalf, tok, 96, False, min_loss_tokens=8))[1]
    assert (parts.num_train, parts.num_val, parts.num_heldout) == (n_train, 5, 12)
    assert parts.val_batch([0]).input_ids[0, : len(first_eval.input_ids)].tolist() == first_eval.input_ids
    assert any("5 validation samples from data.eval (12 there)" in m for m in said)


def test_one_place_chooses_the_attention_backend(make_spec):
    """train.attention: 'auto' is flex on CUDA and dense SDPA elsewhere; build_parts applies the
    choice to every draft layer."""
    from deepspec_core.drafts.layers import DraftLayer
    from deepspec_core.train.data import attention_backend, build_parts

    assert attention_backend("auto", torch.device("cpu")) == "sdpa"
    assert attention_backend("auto", torch.device("cuda")) == "flex"
    assert attention_backend("flex", torch.device("cpu")) == "flex"
    parts = build_parts(make_spec("dflash", "train.attention='flex'"), torch.device("cpu"), say=lambda m: None)
    layers = [m for m in parts.draft.modules() if isinstance(m, DraftLayer)]
    assert layers and all(m.attention_backend == "flex" for m in layers)
