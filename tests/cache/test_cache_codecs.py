"""Codecs: exact round trips for the lossless ones, stated error bounds for the lossy ones."""

from __future__ import annotations

import pytest
import torch

from deepspec_core.cache.codecs import CODECS, GroupIntZstd, ScaledFP8Zstd, get_codec
from deepspec_core.errors import CacheError

pytestmark = pytest.mark.unit


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _features(t: int = 24, k: int = 3, h: int = 96, seed: int = 0):
    """Residual-stream-like features: Gaussian with a few huge outlier channels (as in SmolLM2)."""
    g = torch.Generator().manual_seed(seed)
    aux = torch.randn(t, k, h, generator=g)
    aux[:, :, 7] *= 3000.0  # absmax ~1e4, far beyond e4m3's 448
    final = torch.randn(t, h, generator=g)
    return aux.bfloat16(), final.bfloat16()


@pytest.mark.parametrize("name", CODECS.names())
def test_round_trip_shapes_dtype_and_stated_error(name):
    codec = get_codec(name)
    aux, final = _features()
    a_bytes, f_bytes = codec.encode_features(aux, final)
    aux2, final2 = codec.decode_features(a_bytes, f_bytes, 24, 3, 96)
    assert aux2.shape == aux.shape and final2.shape == final.shape
    assert aux2.dtype == final2.dtype == torch.bfloat16
    assert torch.isfinite(aux2.float()).all() and torch.isfinite(final2.float()).all()
    if codec.aux.lossless:
        assert torch.equal(aux2, aux)
    else:
        assert 0 < _rel(aux2, aux) <= codec.max_rel_l2_aux
    if codec.final.lossless:
        assert torch.equal(final2, final)
    else:
        assert 0 < _rel(final2, final) <= codec.max_rel_l2_final


def test_lossy_codecs_are_smaller_than_lossless_ones():
    aux, final = _features(t=64, h=256)
    sizes = {n: sum(map(len, get_codec(n).encode_features(aux, final))) for n in CODECS.names()}
    assert sizes["bf16"] == 2 * aux.numel() + 2 * final.numel()
    assert sizes["bf16-zstd"] < sizes["bf16"]
    assert sizes["fp8-zstd"] < 0.8 * sizes["bf16-zstd"]
    assert sizes["int4-zstd"] < sizes["fp8-zstd"]
    assert sizes["int3-fp8"] < sizes["int4-fp8"] < sizes["int4-zstd"]


def test_scaled_fp8_survives_outliers_a_plain_cast_destroys():
    x = torch.randn(8, 64)
    x[:, 3] = 24960.0  # SmolLM2's absmax
    plain = x.to(torch.float8_e4m3fn).float()
    assert _rel(plain, x) > 0.5  # saturates at 448
    fp8 = ScaledFP8Zstd()
    y = fp8.decode(fp8.encode(x), 8, 64)
    assert _rel(y, x) < 0.03
    # The small channels keep their relative precision too: the scale is per row, not per tensor.
    assert _rel(y[:, :3], x[:, :3]) < 0.5


def test_int_codec_handles_zero_rows_and_widths_off_the_group():
    codec = GroupIntZstd(bits=4, group=32)
    x = torch.randn(5, 50)
    x[2] = 0.0
    y = codec.decode(codec.encode(x), 5, 50)
    assert y.shape == (5, 50)
    assert torch.equal(y[2], torch.zeros(50, dtype=torch.bfloat16))
    assert _rel(y, x) < 0.12


def test_unknown_codec_lists_the_choices():
    with pytest.raises(CacheError, match="unknown cache codec 'zip'") as err:
        get_codec("zip")
    assert "fp8-zstd" in err.value.hint
