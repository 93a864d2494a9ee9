"""`deepspec train` with its output not a terminal (a log file, nohup, SLURM, CI): the training stage
writes plain progress lines while it runs, not only its step-0 validation and the final table."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deepspec_cli import progress as cli_progress
from deepspec_cli.main import app
from deepspec_core.spec import save_spec

pytestmark = pytest.mark.integration


def test_train_to_a_log_writes_plain_progress_lines_during_training(make_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_progress, "INTERVAL_S", 0.0)  # a line per step instead of one per 30 s
    spec = make_spec("eagle3", "train.max_steps=4", "train.log_every=2", "train.val_every=4", "train.save_every=4")
    path = tmp_path / "spec.toml"
    save_spec(spec, path)
    res = CliRunner().invoke(app, ["train", str(path)])  # CliRunner's stdout is not a terminal
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("train: ")]
    assert [line.split(" · ")[0] for line in lines[:-1]] == [f"train: {s}/4 steps ({s / 4:.0%})" for s in range(1, 5)]
    assert " steps/s · eta " in lines[0]
    assert all(k in lines[1] for k in (" loss ", " τ ", " tok/s")), lines[1]  # the first logging step
    assert lines[-1].startswith("train: done, 4/4 steps (100%) in ")
    out = res.output
    assert out.index("val step 0:") < out.index(lines[0]) < out.index("val step 4:")  # in order, one log
