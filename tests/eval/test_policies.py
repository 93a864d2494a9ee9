"""`deepspec eval --draft-length / --calibrate` through the CLI: the policy is recorded and shortens
rounds without changing a single output token; STS temperatures are fitted on held-out prompts,
stored with the checkpoint and reported before/after; the scheduler records its SPS profile."""

from __future__ import annotations

import json

import pytest
from test_runner import _run_dir
from typer.testing import CliRunner

from deepspec_cli.main import app

pytestmark = pytest.mark.integration

runner = CliRunner()


def _heldout(tmp_path):
    path = tmp_path / "heldout.jsonl"
    rows = [{"id": f"h{i}", "messages": [{"role": "user", "content": f"Write a function number {i} that adds."},
                                         {"role": "assistant", "content": "def f(a, b):\n    return a + b"}]}
            for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _eval(run, out, *extra):
    args = ["eval", "--draft", str(run), "--benchmarks", "mbpp", "--limit", "3", "--data-dir", "packaged",
            "--max-new-tokens", "24", "--save-outputs", "--out", str(out), *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    outputs = [json.loads(x) for x in (out / "outputs" / "mbpp.jsonl").read_text().splitlines()]
    return json.loads((out / "results.json").read_text()), outputs, res.output


def test_threshold_with_calibration_is_lossless_and_reports_calibration(tmp_path, tiny_target):
    run = _run_dir(tmp_path, tiny_target, "dspark")
    fixed, fixed_out, _ = _eval(run, tmp_path / "fixed")
    assert fixed["protocol"]["draft_length"] == "fixed" and fixed["calibration"]["sts_temperatures"] is None
    assert fixed["benchmarks"]["mbpp"]["drafted_tokens"] == 3 * fixed["benchmarks"]["mbpp"]["rounds"]

    got, got_out, printed = _eval(run, tmp_path / "thr", "--draft-length", "threshold", "--threshold", "0.5",
                                  "--calibrate", "--calibration-data", str(_heldout(tmp_path)))
    p = got["protocol"]
    assert (p["draft_length"], p["draft_length_threshold"]) == ("threshold", 0.5)
    stored = json.loads((run / "step_2" / "calibration.json").read_text())
    assert p["sts_temperatures"] == stored["sts_temperatures"] and len(stored["sts_temperatures"]) == 3
    assert stored["prompts"] == 6 and stored["rounds"] > 0
    cal = got["calibration"]
    assert len(cal["ece15_raw"]) == len(cal["ece15_sts"]) == len(cal["auc_raw"]) == 3 and cal["rounds"][0] > 0
    assert (tmp_path / "thr" / "calibration.png").stat().st_size > 0 and "confidence calibration" in printed
    # Shorter rounds, the same tokens.
    assert [r["generated_ids"] for r in got_out] == [r["generated_ids"] for r in fixed_out]
    b = got["benchmarks"]["mbpp"]
    assert b["drafted_tokens"] < 3 * b["rounds"]
    assert all(sum(r["accept_lengths"]) + 1 == len(r["generated_ids"]) for r in got_out)


def test_the_scheduler_records_its_sps_profile_and_stays_lossless(tmp_path, tiny_target, monkeypatch):
    """The scheduler follows the profile it measured (here a stand-in): when reading two tokens is
    100× slower than one, no drafted token is worth verifying — and the output is unchanged."""
    from deepspec_core.eval import runner as eval_runner

    asked = []

    def steep_profile(model, max_tokens):
        asked.append(max_tokens)
        return (100.0, 1.0, 1.0, 1.0)

    monkeypatch.setattr(eval_runner, "profile_sps", steep_profile)
    run = _run_dir(tmp_path, tiny_target, "eagle3")
    _, fixed_out, _ = _eval(run, tmp_path / "fixed")
    got, got_out, _ = _eval(run, tmp_path / "sched", "--draft-length", "scheduler")
    assert asked == [4] and got["protocol"]["sps_profile"] == [100.0, 1.0, 1.0, 1.0]  # SPS(B), B = 1..k+1
    b = got["benchmarks"]["mbpp"]
    assert b["drafted_tokens"] == 0 and b["accept_length_counts"] == [b["rounds"], 0, 0, 0]
    assert [r["generated_ids"] for r in got_out] == [r["generated_ids"] for r in fixed_out]


def test_policy_and_calibration_mistakes_are_one_line(tmp_path, tiny_target):
    run = _run_dir(tmp_path, tiny_target, "dspark")
    res = runner.invoke(app, ["eval", "--draft", str(run), "--draft-length", "adaptive", "--data-dir", "packaged"])
    assert res.exit_code == 2 and "--draft-length 'adaptive' is not a policy" in res.output and "scheduler" in res.output
    res = runner.invoke(app, ["eval", "--draft", str(run), "--calibrate", "--data-dir", "packaged"])
    assert res.exit_code == 1 and "calibration needs held-out prompts" in " ".join(res.output.split())
    assert "--calibration-data" in res.output and "Traceback" not in res.output


def test_calibration_never_falls_back_to_training_data_when_the_validation_file_is_missing(tmp_path, tiny_target):
    """A run with data.eval trained on every data.train conversation: without the data.eval file
    the error names it instead of calibrating on the training tail."""
    from deepspec_core.spec import load_spec, save_spec

    run = _run_dir(tmp_path, tiny_target, "dspark")
    train = tmp_path / "train.jsonl"
    train.write_text(_heldout(tmp_path).read_text())
    spec = load_spec(run / "spec.toml")
    data = spec.data.model_copy(update={"train": [str(train)], "eval": [str(tmp_path / "gone.jsonl")]})
    save_spec(spec.model_copy(update={"data": data}), run / "spec.toml")
    res = runner.invoke(app, ["eval", "--draft", str(run), "--calibrate", "--data-dir", "packaged"])
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "gone.jsonl is not on this machine" in out and "--calibration-data" in out
    assert not (run / "step_2" / "calibration.json").exists()
