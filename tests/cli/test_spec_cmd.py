"""`deepspec spec` and the CLI's error contract: one line, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.spec import load_spec

runner = CliRunner()


def test_version_and_help():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("deepspec ")
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "spec" in res.output


def test_show_prints_toml_that_loads_back(tmp_path):
    res = runner.invoke(app, ["spec", "show", "tiny-dspark", "--set", "train.lr=1e-3", "--plain"])
    assert res.exit_code == 0, res.output
    path = tmp_path / "spec.toml"
    path.write_text(res.output)
    assert load_spec(str(path)) == load_spec("tiny-dspark", ["train.lr=1e-3"])
    res = runner.invoke(app, ["spec", "check", str(path)])
    assert res.exit_code == 0 and "ok" in res.output


def _run(*args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEEPSPEC_DEBUG": "1" if debug else "0"}
    code = "from deepspec_cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)


def test_bad_value_is_one_line_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[draft]\nalgo = "dflash"\nblock_size = 0\n')
    res = _run("spec", "check", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and "draft.block_size" in lines[0]
    assert len(lines) <= 2


def test_debug_shows_the_traceback():
    res = _run("spec", "show", "tiny-dflash", "--set", "train.lr=-1", debug=True)
    assert res.returncode != 0 and "Traceback" in res.stderr and "train.lr" in res.stderr
