"""Every command's output path of the wrong kind — a file where a directory goes, a directory where
a file goes, a directory of someone else's files for a cache —, a device this machine lacks, and
an estimate's option without --estimate: one line naming the option and the path, before any work,
and what was there is left as it was."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from deepspec_cli.main import app

pytestmark = pytest.mark.integration

runner = CliRunner()


def _refused(args: list[str], expected: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code != 0, res.output
    assert "unexpected" not in res.output and "Traceback" not in res.output, res.output
    assert expected in " ".join(res.output.split()), res.output
    return res.output


@pytest.fixture
def cache_spec(tmp_path, tiny_target, chat_file):
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[target]\nmodel = "{tiny_target}"\nlayer_ids = [0, 1, 2]\n'
                    f'[data]\ntrain = ["{chat_file}"]\nmax_length = 96\n')
    return spec


@pytest.mark.parametrize("command", ["eval", "compare", "target tiny", "target import", "data cache"])
def test_a_file_where_an_output_directory_goes_is_refused_before_any_work(command, tmp_path, cache_spec):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me\n")
    args = {
        "eval": ["eval", "--draft", str(tmp_path / "no-such-run"), "--out", str(a_file)],
        "compare": ["compare", str(tmp_path / "no-such-results"), "--out", str(a_file)],
        "target tiny": ["target", "tiny", "--out", str(a_file)],
        "target import": ["target", "import", str(tmp_path / "model.gguf"), "--out", str(a_file)],
        "data cache": ["data", "cache", str(cache_spec), "--out", str(a_file)],
    }[command]
    what = "cache directory" if command == "data cache" else "--out"
    # the bad --out is named even where another argument is also wrong: it is checked first
    _refused(args, f"{what} {a_file} is a file")
    assert a_file.read_text() == "keep me\n"


@pytest.mark.parametrize("command", ["data fetch", "data regen", "data prompts"])
def test_a_directory_where_an_output_file_goes_is_refused(command, tmp_path, chat_file, tiny_target):
    a_dir = tmp_path / "outputs"
    a_dir.mkdir()
    (a_dir / "keep.txt").write_text("keep me\n")
    args = {
        "data fetch": ["data", "fetch", str(chat_file), "--out", str(a_dir)],
        "data regen": ["data", "regen", "--in", str(chat_file), "--out", str(a_dir), "--target", str(tiny_target)],
        "data prompts": ["data", "prompts", "--out", str(a_dir), "--n", "4"],
    }[command]
    _refused(args, f"--out {a_dir} is a directory")
    assert [p.name for p in a_dir.iterdir()] == ["keep.txt"]


def test_a_cache_is_not_written_among_other_files(tmp_path, cache_spec):
    other = tmp_path / "report"
    other.mkdir()
    (other / "important.txt").write_text("keep me\n")
    _refused(["data", "cache", str(cache_spec), "--out", str(other)],
             f"cache directory {other} holds other files and no feature cache")
    assert [p.name for p in other.iterdir()] == ["important.txt"]


def test_an_input_that_is_not_a_regular_file_is_named_as_such(tmp_path, tiny_target):
    _refused(["data", "regen", "--in", str(tmp_path), "--out", str(tmp_path / "o.jsonl"), "--target", str(tiny_target)],
             f"input file {tmp_path} is not a regular file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable CUDA device")
def test_a_cuda_device_on_a_machine_without_one_is_one_line(tmp_path, chat_file, tiny_target):
    _refused(["data", "regen", "--in", str(chat_file), "--out", str(tmp_path / "o.jsonl"), "--target", str(tiny_target),
              "--device", "cuda"], "--device cuda:")
    _refused(["data", "regen", "--in", str(chat_file), "--out", str(tmp_path / "o.jsonl"), "--target", str(tiny_target),
              "--device", "gpu"], "--device 'gpu' is not a device")


@pytest.mark.parametrize("flag", [["--tokens", "1e9"], ["--sample", "10"]])
def test_an_estimate_option_without_estimate_does_not_start_a_cache(flag, tmp_path, cache_spec):
    _refused(["data", "cache", str(cache_spec), "--out", str(tmp_path / "c"), *flag], f"{flag[0]} only sizes an estimate")
    assert not (tmp_path / "c").exists()
