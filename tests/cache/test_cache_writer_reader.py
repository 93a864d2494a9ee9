"""Writer → reader on a small random Qwen3: content, skips, sharding, ranks, resume, corruption."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from cache_helpers import HIDDEN, LAYER_IDS, MIN_LOSS, make_model, make_samples, write
from torch.utils.data import DataLoader

from deepspec_core.cache import format as fmt
from deepspec_core.cache.online import compute_features
from deepspec_core.cache.reader import FeatureCache
from deepspec_core.errors import CacheError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def kept():
    return [s for _, s in make_samples() if int(s["loss_mask"].sum()) >= MIN_LOSS]


@pytest.fixture(scope="module")
def bf16_cache(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("bf16")
    write(d, "bf16", model=model)
    return d


def _assert_same_cache(a, b):
    ma, mb = (json.loads((d / fmt.MANIFEST).read_text()) for d in (a, b))
    for key in ("counts", "shards", "codec", "layer_ids"):
        assert ma[key] == mb[key]
    assert (a / fmt.INDEX).read_bytes() == (b / fmt.INDEX).read_bytes()
    ca, cb = FeatureCache(a), FeatureCache(b)
    for i in range(len(ca)):
        for k, v in ca[i].items():
            assert torch.equal(v, cb[i][k]), (i, k)


def test_bf16_cache_holds_exactly_the_target_features(bf16_cache, model, kept):
    fc = FeatureCache(bf16_cache)
    assert len(fc) == len(kept)
    assert fc.manifest["counts"]["skipped"] == {"too few loss tokens": len(make_samples()) - len(kept)} != {}
    assert fc.manifest["counts"]["tokens"] == sum(len(s["input_ids"]) for s in kept) == int(fc.lengths.sum())
    assert len(fc.manifest["shards"]) > 3  # 100-token shards
    for i in (0, 7, len(fc) - 1, -1):
        got = fc[i]
        want = compute_features(model, [kept[i]], LAYER_IDS)[0]
        assert got.keys() == want.keys()
        assert got["aux_hidden"].shape == (len(kept[i]["input_ids"]), len(LAYER_IDS), HIDDEN)
        assert got["input_ids"].dtype == torch.int64 and got["loss_mask"].dtype == torch.bool
        for k in want:
            assert torch.equal(got[k], want[k]), k
    with pytest.raises(IndexError):
        fc[len(fc)]


@pytest.mark.parametrize("codec", ["bf16-zstd", "fp8-zstd", "int3-fp8"])
def test_codecs_are_within_their_stated_error_and_smaller(tmp_path, model, bf16_cache, codec):
    write(tmp_path, codec, model=model)
    fc, ref = FeatureCache(tmp_path), FeatureCache(bf16_cache)
    aux_err = [float((fc[i]["aux_hidden"].float() - ref[i]["aux_hidden"].float()).norm()
                     / ref[i]["aux_hidden"].float().norm()) for i in range(len(fc))]
    assert max(aux_err) <= fc.codec.max_rel_l2_aux
    assert (codec == "bf16-zstd") == (max(aux_err) == 0.0)
    assert fc.manifest["sizes"]["bytes"] < ref.manifest["sizes"]["bytes"]
    assert fc.manifest["sizes"]["ratio_vs_raw_bf16"] > 1.0


def test_dataloader_workers_decode_in_parallel(bf16_cache):
    fc = FeatureCache(bf16_cache)
    fc[0]  # the parent opens a descriptor first; workers must open their own
    loader = DataLoader(fc, batch_size=None, num_workers=2, shuffle=False)
    got = list(loader)
    assert len(got) == len(fc)
    assert all(torch.equal(g["final_hidden"], fc[i]["final_hidden"]) for i, g in enumerate(got))


def test_several_ranks_build_the_same_cache_as_one(tmp_path, model, bf16_cache):
    # Rank 1 writes its shards first, then rank 0 writes its own and merges.
    assert write(tmp_path, "bf16", model=model, rank=1, world_size=2) is None
    assert not (tmp_path / fmt.MANIFEST).exists()
    shards = sorted(p.name for p in (tmp_path / fmt.SHARDS).glob("*.bin"))
    assert shards and all(int(n[6:11]) % 2 == 1 for n in shards)
    manifest = write(tmp_path, "bf16", model=model, rank=0, world_size=2)
    assert manifest["counts"]["samples"] == FeatureCache(bf16_cache).manifest["counts"]["samples"]
    _assert_same_cache(tmp_path, bf16_cache)


def test_resume_redoes_half_written_and_missing_shards(tmp_path, model, bf16_cache):
    shutil.copytree(bf16_cache, tmp_path, dirs_exist_ok=True)
    (tmp_path / fmt.MANIFEST).unlink()
    (tmp_path / fmt.INDEX).unlink()
    shard_dir = tmp_path / fmt.SHARDS
    (shard_dir / fmt.shard_meta_name(1)).unlink()  # killed after the rename, before the record
    (shard_dir / fmt.shard_name(2)).write_bytes(b"half")  # a shard cut short
    (shard_dir / f".{fmt.shard_name(3)}.abc.tmp").write_bytes(b"x")  # a killed write
    (shard_dir / fmt.shard_name(3)).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.bin")}
    write(tmp_path, "bf16", model=model)
    after = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.bin")}
    redone = {n for n in after if before.get(n) != after[n]}
    assert redone == {fmt.shard_name(j) for j in (1, 2, 3)}
    assert not list(shard_dir.glob(".*.tmp"))
    _assert_same_cache(tmp_path, bf16_cache)


def test_a_finished_cache_is_not_rewritten_and_a_different_plan_is_refused(tmp_path, model):
    write(tmp_path, "bf16", model=model)
    stamp = (tmp_path / fmt.MANIFEST).stat().st_mtime_ns
    assert write(tmp_path, "bf16", model=model)["codec"] == "bf16"
    assert (tmp_path / fmt.MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(CacheError, match="different codec"):
        write(tmp_path, "fp8-zstd", model=model)


def test_corrupt_and_truncated_shards_are_named(tmp_path, bf16_cache):
    shutil.copytree(bf16_cache, tmp_path, dirs_exist_ok=True)
    shard = tmp_path / fmt.SHARDS / fmt.shard_name(0)
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    fc = FeatureCache(tmp_path)
    with pytest.raises(CacheError, match=r"sample 0 in shard shard-00000\.bin .* corrupt"):
        fc[0]
    with pytest.raises(CacheError, match=r"1 bad shard.*\n  shard-00000\.bin: sha256 mismatch"):
        fc.verify()
    other = tmp_path / fmt.SHARDS / fmt.shard_name(1)
    other.write_bytes(other.read_bytes()[:-5])
    first_of_1 = int(np.argmax(fc.index["shard"] == 1))
    with pytest.raises(CacheError, match=r"shard shard-00001\.bin .*truncated"):
        FeatureCache(tmp_path)[first_of_1]
    with pytest.raises(CacheError, match="no feature cache"):
        FeatureCache(tmp_path / "nowhere")


def test_spec_mismatches_are_one_line_each(bf16_cache, kept):
    from deepspec_core.spec import RunSpec

    spec = RunSpec.model_validate({
        "target": {"model": "other-model", "layer_ids": [0, 2]},
        "data": {"max_length": 64},
    })
    with pytest.raises(CacheError) as err:
        FeatureCache(bf16_cache, spec, hidden_size=48, tokenizer_hash="tok")
    lines = err.value.message.splitlines()[1:]
    assert lines == [
        "  cache target.model is 'random-qwen3' but the run expects 'other-model'",
        "  cache hidden_size is 32 but the run expects 48",
    ]
    ok = spec.model_copy(update={"target": spec.target.model_copy(update={"model": "random-qwen3"})})
    assert len(FeatureCache(bf16_cache, ok, hidden_size=HIDDEN, tokenizer_hash="tok")) == len(kept)  # it opens


def test_index_and_record_layout(bf16_cache):
    index = fmt.read_index(bf16_cache / fmt.INDEX)
    assert index.dtype.itemsize == 24
    assert os.path.getsize(bf16_cache / fmt.INDEX) == 16 + 24 * len(index)
    rec = index[0]
    blob = (bf16_cache / fmt.SHARDS / fmt.shard_name(int(rec["shard"]))).read_bytes()
    blob = blob[int(rec["offset"]) : int(rec["offset"]) + int(rec["length"])]
    ids, mask, aux, final, summary = fmt.unpack_record(blob, int(rec["seq_len"]))
    assert summary is None  # a cache written without the target summary (format 1)
    t = int(rec["seq_len"])
    assert len(aux) == t * len(LAYER_IDS) * HIDDEN * 2 and len(final) == t * HIDDEN * 2  # raw bf16
    assert len(blob) == fmt.RECORD_HEADER.size + t * fmt.TOKEN_BYTES + len(aux) + len(final)
