"""metrics.jsonl, TensorBoard mirroring and pooling of draft metrics over micro-batches / processes."""

from __future__ import annotations

import json

import pytest

from deepspec_core.spec import load_spec
from deepspec_core.train.metrics import MetricsLogger, pooled_metrics


def test_logger_writes_jsonl_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    spec = load_spec("tiny-dspark", ["train.tensorboard=true", "train.wandb=true"])
    notes: list[str] = []
    log = MetricsLogger(tmp_path, spec, resume_step=0, say=notes.append)
    log.log(5, "val", {"loss": 1.5, "accept_per_pos": [0.9, 0.5], "tau_greedy": 2.0})
    log.close()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert rec["step"] == 5 and rec["kind"] == "val" and rec["accept_per_pos"] == [0.9, 0.5]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    try:
        import wandb  # noqa: F401
    except ImportError:
        assert any("wandb" in n for n in notes)  # asked for but missing: said, not fatal


def test_pooling_weights_by_supervised_rows_and_sums_counts():
    a = {"loss": 1.0, "accept_per_pos": [1.0, 0.0], "rows": 3.0, "tokens": 5.0}
    b = {"loss": 3.0, "accept_per_pos": [0.0, 1.0], "rows": 1.0, "tokens": 2.0}
    m = pooled_metrics([a, b])
    assert m["loss"] == pytest.approx(1.5) and m["accept_per_pos"] == pytest.approx([0.75, 0.25])
    assert m["rows"] == 4.0 and m["tokens"] == 7.0
    assert pooled_metrics([a, b]) == pooled_metrics([b, a])


def test_without_a_terminal_progress_goes_to_the_log_as_plain_lines():
    from deepspec_core.train.metrics import TrainProgress

    lines: list[str] = []
    with TrainProgress(total=10, start=0, enabled=False, say=lines.append, interval=0.0) as p:
        p.update(4, loss=2.5, tau=1.75, lr=1e-3, tokens_per_s=1234.0, tau_greedy=1.5)
        p.print("val step 4: loss 2.4")
        p.update(10)
    assert lines[0].startswith("train step 4/10 (40%) · loss 2.5000 · τ≈1.75 (greedy 1.50) · lr 1.00e-03 · 1,234 tok/s")
    assert "steps/s · eta " in lines[0]
    assert lines[1] == "val step 4: loss 2.4" and lines[2].startswith("train step 10/10 (100%)")
