"""`deepspec data cache / inspect` end to end on the quick tiny target (tokenise → forward → shards)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.cache import format as fmt
from deepspec_core.cache.online import compute_features, iter_token_samples
from deepspec_core.cache.reader import FeatureCache
from deepspec_core.spec import load_spec
from deepspec_core.targets.hf import load_target, tokenizer_hash

pytestmark = pytest.mark.integration

runner = CliRunner()

ANSWERS = [
    "def add(a, b):\n    return a + b",
    "def square(x):\n    \"\"\"Return x squared.\"\"\"\n    return x * x",
    "for i in range(10):\n    print(i)",
    "import os\nprint(os.getcwd())",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y",
    "ok",  # too few supervised tokens: skipped and counted
]


@pytest.fixture(scope="module")
def setup(tiny_target, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    data = d / "train.jsonl"
    with open(data, "w") as f:
        for i, a in enumerate(ANSWERS * 2):
            msgs = [{"role": "user", "content": f"Write Python, please ({i})."}, {"role": "assistant", "content": a}]
            f.write(json.dumps({"id": f"c{i}", "messages": msgs}) + "\n")
    spec = d / "spec.toml"
    spec.write_text(
        f'[target]\nmodel = "{tiny_target}"\nlayer_ids = [0, 1, 2]\n'
        f'[data]\ntrain = ["{data}"]\nmax_length = 96\nmin_loss_tokens = 4\n'
        f'[cache]\npath = "{d / "cache"}"\nbatch_size = 3\n'
    )
    return d, spec


def test_cache_then_inspect_then_read(setup):
    d, spec = setup
    res = runner.invoke(app, ["data", "cache", str(spec), "--codec", "bf16-zstd"])
    assert res.exit_code == 0, res.output
    assert "cache complete" in res.output
    m = json.loads((d / "cache" / fmt.MANIFEST).read_text())
    assert m["counts"]["samples"] == 10 and m["counts"]["skipped"] == {"too few loss tokens": 2}
    assert m["codec"] == "bf16-zstd" and m["layer_ids"] == [0, 1, 2]

    res = runner.invoke(app, ["data", "inspect", str(d / "cache"), "--verify"])
    assert res.exit_code == 0, res.output
    assert "all 1 shard checksums match" in res.output and "smaller" in res.output

    # The cache holds exactly what the capture function gives for the tokenised conversations.
    s = load_spec(str(spec))
    target = load_target(s.target.model)
    fc = FeatureCache(d / "cache", s, hidden_size=target.config.hidden_size,
                      tokenizer_hash=tokenizer_hash(target.tokenizer))
    samples = [x for _, x in iter_token_samples(s.data.train, target.tokenizer, 96, False, 4)]
    assert len(fc) == len(samples) == 10
    for i in (0, 9):
        want = compute_features(target.model, [samples[i]], s.target.layer_ids)[0]
        for k, v in want.items():
            assert torch.equal(fc[i][k], v), k

    res = runner.invoke(app, ["data", "cache", str(spec), "--estimate"])
    assert res.exit_code == 0, res.output
    assert f"{m['counts']['tokens']:,} tokens in 10 samples (tokenise-only pass)" in res.output
    assert "fp8-zstd" in res.output and "int3-fp8" in res.output
    # The first 6 of 12 conversations hold each answer once, so the extrapolation is exact here.
    res = runner.invoke(app, ["data", "cache", str(spec), "--estimate", "--sample", "6"])
    assert res.exit_code == 0, res.output
    assert f"{m['counts']['tokens']:,} tokens in ~10 samples, extrapolated from 6 conversations" in res.output


def test_errors_are_one_line(setup, tmp_path):
    d, spec = setup
    res = runner.invoke(app, ["data", "cache", str(spec), "--codec", "zip", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "unknown cache codec 'zip'" in res.output
    assert not (tmp_path / "x").exists()  # nothing written, nothing loaded
    res = runner.invoke(app, ["data", "inspect", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "no feature cache" in res.output and "Traceback" not in res.output


def test_no_usable_sample_is_one_error_and_the_fixed_command_then_works(tiny_target, tmp_path):
    """Every sample too short for min_loss_tokens after truncation: one line naming the file, the
    count by reason and the fix; nothing written, so the corrected command runs."""
    data = tmp_path / "short.jsonl"
    rows = [{"id": f"s{i}", "messages": [{"role": "user", "content": "Write a long function " * 8},
                                         {"role": "assistant", "content": "def f(x):\n    return x * 2"}]}
            for i in range(3)]
    rows.append({"id": "empty", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[target]\nmodel = "{tiny_target}"\nlayer_ids = [0, 1, 2]\n'
                    f'[data]\ntrain = ["{data}"]\nmax_length = 40\nmin_loss_tokens = 8\n'
                    f'[cache]\npath = "{tmp_path / "cache"}"\n')
    res = runner.invoke(app, ["data", "cache", str(spec)])
    assert res.exit_code == 1, res.output
    line = " ".join(res.output.split())
    assert f"no usable training sample in {data}: 0 of 4 kept" in line
    assert "too few loss tokens: 3 (raise data.max_length or lower data.min_loss_tokens)" in line
    assert "empty assistant answer: 1" in line and "nan" not in line and "Traceback" not in res.output
    assert not (tmp_path / "cache" / fmt.PLAN).exists()
    res = runner.invoke(app, ["data", "cache", str(spec), "--set", "data.max_length=200"])
    assert res.exit_code == 0, res.output
    assert "cache complete" in res.output and "3 samples" in res.output and "empty assistant answer: 1" in res.output


def test_a_stale_cache_is_refused_with_what_changed(setup, tiny_target, tmp_path):
    """Weights replaced in the target directory, or a training file edited after the cache was
    built: training refuses the cache with one line naming the change; --allow-stale-cache overrides."""
    import shutil

    from safetensors.torch import load_file, save_file

    d, _ = setup
    target = tmp_path / "target"
    shutil.copytree(tiny_target, target)
    data = tmp_path / "train.jsonl"
    shutil.copy(d / "train.jsonl", data)
    common = ["--set", f"target.model='{target}'", "--set", f"data.train=['{data}']", "--set", "data.max_length=96",
              "--set", f"cache.path='{tmp_path / 'cache'}'", "--set", f"output.root='{tmp_path / 'runs'}'",
              "--set", "train.max_steps=1", "--set", "train.val_samples=0", "--set", "train.global_batch_size=4",
              "--set", "train.micro_batch_size=4", "--set", "train.tensorboard=false"]
    assert runner.invoke(app, ["data", "cache", "tiny-dflash", *common]).exit_code == 0

    weights = target / "model.safetensors"
    state = {k: v * 1.01 for k, v in load_file(weights).items()}  # retrained weights, same shapes
    save_file(state, weights, metadata={"format": "pt"})
    res = runner.invoke(app, ["train", "tiny-dflash", *common])
    assert res.exit_code == 1 and "is stale: the weights of target" in " ".join(res.output.split()), res.output
    assert "--allow-stale-cache" in res.output and not (tmp_path / "runs").exists()

    data.write_text(data.read_text().replace("Write Python", "Write Rust"))
    res = runner.invoke(app, ["train", "tiny-dflash", *common])
    assert f"training file {data} changed since it was built" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["train", "tiny-dflash", *common, "--allow-stale-cache"])
    assert res.exit_code == 0, res.output

    typo = tmp_path / "trian.jsonl"  # a misspelt data.train: the file that is not there is named
    res = runner.invoke(app, ["train", "tiny-dflash", *common, "--set", f"data.train=['{typo}']",
                              "--set", f"output.root='{tmp_path / 'other-runs'}'"])
    assert res.exit_code == 1 and f"(of which {typo} does not exist)" in " ".join(res.output.split()), res.output
