"""Online mode gives the tensors a cache would: exactly for bf16, within the codec's error otherwise."""

from __future__ import annotations

import pytest
import torch
from cache_helpers import LAYER_IDS, MIN_LOSS, make_model, make_samples, write

from deepspec_core.cache.online import OnlineFeatures
from deepspec_core.cache.reader import FeatureCache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def online(model):
    kept = [s for _, s in make_samples() if int(s["loss_mask"].sum()) >= MIN_LOSS]
    return OnlineFeatures(model, kept, LAYER_IDS)


def test_bf16_cache_equals_online_features(tmp_path, model, online):
    write(tmp_path, "bf16", model=model, batch_size=1)
    fc = FeatureCache(tmp_path)
    assert len(fc) == len(online)
    assert list(fc.lengths) == online.lengths
    for i in range(len(fc)):
        a, b = fc[i], online[i]
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (i, k)


def test_batched_online_matches_single(online):
    batch = online.get_batch([0, 5, 9])
    for j, i in enumerate([0, 5, 9]):
        single = online[i]
        assert torch.equal(batch[j]["input_ids"], single["input_ids"])
        torch.testing.assert_close(batch[j]["aux_hidden"], single["aux_hidden"], atol=2e-2, rtol=2e-2)


def test_lossy_cache_is_within_stated_error_of_online(tmp_path, model, online):
    write(tmp_path, "fp8-zstd", model=model, batch_size=1)
    fc = FeatureCache(tmp_path)
    for i in range(len(fc)):
        a, b = fc[i], online[i]
        err = (a["aux_hidden"].float() - b["aux_hidden"].float()).norm() / b["aux_hidden"].float().norm()
        assert err <= fc.codec.max_rel_l2_aux
        assert torch.equal(a["final_hidden"], b["final_hidden"])  # lossless under fp8-zstd
