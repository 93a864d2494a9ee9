"""--estimate arithmetic: the reference's 30,726 bytes/token and ~38 TB for Qwen3-4B."""

from __future__ import annotations

import pytest

from deepspec_core.cache.estimate import estimate_bytes, make_estimate
from deepspec_core.cache.format import raw_bf16_bytes_per_token

pytestmark = pytest.mark.unit

QWEN3_4B = dict(hidden_size=2560, num_layers=5)
RECIPE_TOKENS = 1.24e9


def test_reference_layout_is_30726_bytes_per_token():
    assert raw_bf16_bytes_per_token(**QWEN3_4B) == 30_726


def test_qwen3_4b_recipe_is_about_38_tb_raw():
    raw = estimate_bytes(**QWEN3_4B, num_tokens=RECIPE_TOKENS, codec="bf16")
    assert raw == pytest.approx(38.1e12, rel=1e-3)
    # our bf16 records drop one of the reference's two mask bytes and add the target summary
    # (float32 logsumexp + int32 argmax per token)
    assert raw == round((30_726 - 1 + 8) * RECIPE_TOKENS)


def test_default_codec_meets_the_size_goal_and_the_table_is_consistent():
    est = make_estimate(int(RECIPE_TOKENS), 1_000_000, shard_size_mb=256, **QWEN3_4B)
    rows = {r.codec: r for r in est.rows}
    assert est.raw_bf16_bytes == 30_726 * int(RECIPE_TOKENS)
    assert rows["bf16"].ratio_vs_raw_bf16 == pytest.approx(1.0, abs=3e-4)
    assert rows["fp8-zstd"].ratio_vs_raw_bf16 >= 2.0
    assert max(r.ratio_vs_raw_bf16 for r in est.rows) >= 4.0
    assert rows["bf16"].shards == -(-rows["bf16"].total_bytes // 256_000_000)
    assert rows["bf16-zstd"].lossless and not rows["fp8-zstd"].lossless
