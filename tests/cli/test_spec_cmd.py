"""`deepspec spec` and the CLI's error contract: one line, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.spec import load_spec

pytestmark = pytest.mark.integration

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


def test_spec_check_validates_registry_backed_names(tmp_path):
    for sets, field, choice in [(["cache.codec='fp9-zstd'"], "cache.codec: unknown cache codec 'fp9-zstd'", "fp8-zstd"),
                                (['eval.benchmarks=["gsm9k"]'], "eval.benchmarks: unknown benchmark 'gsm9k'", "gsm8k")]:
        res = runner.invoke(app, ["spec", "check", "tiny-dflash", *[a for s in sets for a in ("--set", s)]])
        assert res.exit_code == 2, res.output
        assert field in res.output and choice in res.output


def test_train_refuses_a_spec_the_target_contradicts_before_claiming_a_run(tiny_target, tmp_path):
    """Checks that need the target's config run first: one line naming the field, value and limit;
    no run directory is created."""
    base = ["train", "tiny-dflash", "--set", f"target.model='{tiny_target}'", "--set", f"output.root='{tmp_path}'",
            "--set", "cache.online=true", "--set", "data.train=['unused.jsonl']"]
    for extra, message in [
        ("draft.draft_vocab_size=5000", "draft.draft_vocab_size 5000 exceeds the target's vocabulary (2048 tokens)"),
        ("target.mask_token_id=99999", "target.mask_token_id 99999 is outside the target's vocabulary (2048 tokens)"),
        ("target.layer_ids=[0, 9]", "target.layer_ids [9] are beyond the target's depth (4 decoder layers)"),
        ("cache.codec='fp9-zstd'", "cache.codec: unknown cache codec 'fp9-zstd'"),
    ]:
        res = runner.invoke(app, [*base, "--set", extra])
        assert res.exit_code in (1, 2), res.output
        assert message in " ".join(res.output.split()) and "Traceback" not in res.output, res.output
        assert not any(tmp_path.iterdir()), list(tmp_path.rglob("*"))


def test_a_set_value_that_is_broken_toml_says_to_quote_strings():
    res = _run("spec", "show", "tiny-dflash", "--set", "data.train=[data/x.jsonl]")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--set data.train: [data/x.jsonl] is not valid TOML" in res.stderr
    assert "quote each string" in res.stderr and '["data/x.jsonl"]' in res.stderr
    ok = _run("spec", "show", "tiny-dflash", "--set", "target.model=tiny", "--plain")
    assert ok.returncode == 0, ok.stderr


def test_demo_out_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("x")
    res = _run("demo", "--budget", "smoke", "--out", str(f))
    assert res.returncode == 2 and f"--out {f} is a file" in res.stderr and "Traceback" not in res.stderr


def test_an_unexpected_crash_prints_one_line_and_the_path_of_its_traceback(tmp_path, monkeypatch):
    """A bug (here: a target loader that raises a plain TypeError) is not a user mistake: one line,
    exit 1, and a crash log under DEEPSPEC_HOME/logs with the full traceback."""
    code = ("import deepspec_core.spec as s\n"
            "def boom(*a, **k):\n    raise TypeError('shape bug deep inside')\n"
            "s.load_spec = boom\n"
            "import deepspec_cli.spec_cmd as c\nc.load_spec = boom\n"
            "from deepspec_cli.main import main; main()")
    env = {**os.environ, "DEEPSPEC_HOME": str(tmp_path), "DEEPSPEC_DEBUG": "0"}
    res = subprocess.run([sys.executable, "-c", code, "spec", "check", "tiny-dflash"], capture_output=True,
                         text=True, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "unexpected TypeError: shape bug deep inside" in res.stderr
    logs = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in " ".join(res.stderr.split())
    text = logs[0].read_text()
    assert "Traceback" in text and "in boom" in text and "spec check tiny-dflash" in text


def test_offline_hub_ids_fail_at_once_with_one_line(tmp_path):
    """No network (HF_HUB_OFFLINE, as on this machine): a hub id fails within seconds with one line
    that says how to use local files — no retry spam."""
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DEEPSPEC_DEBUG": "0", "DEEPSPEC_HOME": str(tmp_path)}
    code = "from deepspec_cli.main import main; main()"
    cases = [
        (["data", "fetch", "some-org/some-dataset", "--out", str(tmp_path / "x.jsonl")], "the Hugging Face hub is unreachable"),
        (["data", "regen", "--in", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl"),
          "--target", "some-org/some-model"], "does not exist"),
        (["data", "cache", "dspark-qwen3-8b", "--estimate", "--set", "target.model='some-org/unknown-model'",
          "--set", "data.train=[]"], "not in the local Hugging Face cache and the hub is unreachable"),
    ]
    for args, message in cases:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
        elapsed = time.perf_counter() - t0
        assert res.returncode != 0 and message in " ".join(res.stderr.split()), (args, res.stderr)
        assert "Retrying" not in res.stderr and "Traceback" not in res.stderr
        assert elapsed < 20, (args, elapsed)  # import time included; the hub client retries for ~23 s


def test_the_cli_starts_without_importing_torch():
    """`deepspec --help` stays fast: no command module imports torch (or transformers) at import time."""
    code = "import sys, deepspec_cli.main; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
