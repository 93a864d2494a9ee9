"""evaluate() end to end on the tiny target with freshly initialised drafts saved as checkpoints:
files and schema, audit of saved outputs against the target, mt-bench's two turns, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.decode.cpu_linear import is_packed, packing_available
from deepspec_core.decode.speculative import target_generate
from deepspec_core.distributed import free_port
from deepspec_core.drafts import DRAFTS
from deepspec_core.errors import CheckpointError
from deepspec_core.eval.loading import load_draft
from deepspec_core.eval.metrics import EvalResults
from deepspec_core.eval.runner import evaluate
from deepspec_core.runs import resolve_checkpoint
from deepspec_core.spec import RunSpec, algorithms, save_spec

pytestmark = pytest.mark.integration


def _run_dir(tmp_path, tiny_target, algo: str):
    from deepspec_core.drafts import build_draft
    from deepspec_core.runs import RunDir, checkpoint_config
    from deepspec_core.targets.hf import load_target
    from deepspec_core.train.checkpoint import TrainState, save_checkpoint

    draft = DRAFTS.get(algo).spec_class.preset("tiny").model_dump()
    spec = RunSpec.model_validate(
        {
            "name": f"eval-{algo}",
            "target": {"model": str(tiny_target), "layer_ids": [0, 1, 2], "mask_token_id": 5},
            "draft": draft,
            "output": {"root": str(tmp_path)},
            "eval": {"benchmarks": ["humaneval", "mt-bench"], "temperature": 0.0, "max_new_tokens": 10,
                     "num_draft_tokens": 3},
        }
    )
    t = load_target(str(tiny_target))
    torch.manual_seed(0)
    d = build_draft(spec, t.config, t.model.get_input_embeddings(), t.model.get_output_embeddings())
    run = RunDir(spec.run_dir())
    run.path.mkdir(parents=True)
    save_spec(spec, run.spec_path)
    save_checkpoint(
        run, TrainState(step=2), d.trainable_state_dict(), checkpoint_config(spec, d, str(tiny_target)), None, [],
        keep_last=2
    )
    return run.path


@pytest.mark.parametrize("algo", algorithms())
def test_evaluate_writes_valid_results_and_auditable_outputs(tmp_path, tiny_target, algo):
    run = _run_dir(tmp_path, tiny_target, algo)
    res = evaluate(run, limit=2, data_dir="packaged", speed=True, save_outputs=True, progress=False)
    out = run / "eval" / "step_2"
    assert res.out_dir == out
    data = json.loads((out / "results.json").read_text())
    r = EvalResults.model_validate(data)
    p = r.protocol
    assert (p.algorithm, p.num_draft_tokens, p.temperature, p.max_new_tokens, p.thinking_source) == (
        algo,
        3,
        0.0,
        10,
        "draft",
    )
    assert (
        p.bonus_token_in_tau
        and p.chain_drafting
        and [b.name for b in p.benchmarks] == ["humaneval", "mt-bench"]
    )
    assert all(b.samples == 2 and len(b.content_hash) == 16 for b in p.benchmarks)
    for name, b in r.benchmarks.items():
        assert len(b.acceptance_conditional) == 3 and len(b.accept_length_counts) == 4
        # τ and the histogram are those of the rounds in the saved outputs
        lengths = [n for line in (out / "outputs" / f"{name}.jsonl").read_text().splitlines()
                   for n in json.loads(line)["accept_lengths"]]
        assert b.rounds == len(lengths) > 0 and b.tau == pytest.approx(sum(lengths) / len(lengths))
        assert b.accept_length_counts == [lengths.count(n) for n in range(1, 5)]
        # speed: every generated token timed both ways; the speedup is the ratio of the two times
        assert b.speed.tokens == b.generated_tokens
        assert b.speed.speedup == pytest.approx(b.speed.target_seconds / b.speed.spec_seconds)
        # per prompt [committed, rounds], summing to the benchmark's; τ's bootstrap interval holds τ
        assert len(b.prompt_rounds) == 2 and [sum(c for c, _ in b.prompt_rounds), sum(r for _, r in b.prompt_rounds)] \
            == [round(b.tau * b.rounds), b.rounds]
        assert b.tau_ci95[0] - 1e-9 <= b.tau <= b.tau_ci95[1] + 1e-9
        # a round's cost in target steps, every round timed and each path's prefills (one per turn,
        # timed apart) left out: seconds per round over seconds per target-only step
        sp = b.speed
        assert sp.rounds == b.rounds and sp.turns == b.turns == 2
        assert 0 < sp.spec_prefill_seconds < sp.spec_seconds and 0 < sp.target_prefill_seconds < sp.target_seconds
        step = (sp.target_seconds - sp.target_prefill_seconds) / (sp.tokens - sp.turns)
        assert sp.round_cost == pytest.approx((sp.spec_seconds - sp.spec_prefill_seconds) / sp.rounds / step)
        assert json.loads((out / f"{name}.json").read_text())["tau"] == b.tau
    assert r.macro.speedup == pytest.approx(sum(b.speed.speedup for b in r.benchmarks.values()) / 2)
    assert r.macro.tau_ci95[0] - 1e-9 <= r.macro.tau <= r.macro.tau_ci95[1] + 1e-9
    assert r.macro.round_cost == pytest.approx(sum(b.speed.round_cost for b in r.benchmarks.values()) / 2)
    assert p.draft_dtype == str(load_draft(run).draft.param_dtype).removeprefix("torch.")
    for plot in ("acceptance.png", "tau.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot

    # Saved outputs are auditable: the target alone, greedy, reproduces every generated id.
    loaded = load_draft(run)
    # On a CPU the fp32 target decodes through packed weights (cpu_linear), the baseline as well;
    # the draft decodes in bf16 there (decode_draft_dtype), which packing leaves alone.
    assert is_packed(loaded.target.model) == packing_available()
    assert loaded.draft.param_dtype == torch.bfloat16 and not is_packed(loaded.draft)
    assert is_packed(load_draft(run, draft_dtype="float32").draft) == packing_available()
    rows = [json.loads(line) for line in (out / "outputs" / "mt-bench.jsonl").read_text().splitlines()]
    assert [(row["sample"], row["turn"]) for row in rows] == [(0, 0), (1, 0)]  # first user turn only
    assert not p.all_turns and p.subset_seed == 980406
    for row in rows:
        ids = torch.tensor([row["prompt_ids"]])
        want = target_generate(
            loaded.target.model, ids, 10, eos_token_ids=[loaded.target.tokenizer.eos_token_id]
        )
        assert row["generated_ids"][: len(want.tokens)] == want.tokens[: len(row["generated_ids"])]
        # τ counts only committed tokens: every round's tokens plus the one after the prefill
        assert sum(row["accept_lengths"]) + 1 == len(row["generated_ids"])
        assert len(row["accepted_drafts"]) == len(row["accept_lengths"])
        # one confidence per drafted slot: DSpark's head, the others' own token probabilities
        assert [len(c) for c in row["confidences"]] == [3] * len(row["accept_lengths"])
    for name, b in r.benchmarks.items():
        assert b.generated_tokens == sum(
            sum(row["accept_lengths"]) + 1
            for row in map(json.loads, (out / "outputs" / f"{name}.jsonl").read_text().splitlines())
        )


def test_all_turns_decodes_the_second_turn_after_the_models_own_answer(tmp_path, tiny_target):
    run = _run_dir(tmp_path, tiny_target, "dflash")
    res = evaluate(run, benchmarks="mt-bench", limit=1, data_dir="packaged", all_turns=True, save_outputs=True,
                   out_dir=tmp_path / "ev", progress=False, plots=False)
    assert res.results.protocol.all_turns and res.results.benchmarks["mt-bench"].turns == 2
    rows = [json.loads(line) for line in (tmp_path / "ev" / "outputs" / "mt-bench.jsonl").read_text().splitlines()]
    assert [(row["sample"], row["turn"]) for row in rows] == [(0, 0), (0, 1)]
    tok = load_draft(run).target.tokenizer
    assert rows[0]["text"].strip() in tok.decode(rows[1]["prompt_ids"])
    assert all(sum(row["accept_lengths"]) + 1 == len(row["generated_ids"]) for row in rows)


def test_overrides_are_recorded(tmp_path, tiny_target):
    run = _run_dir(tmp_path, tiny_target, "eagle3")
    res = evaluate(
        run / "step_2",
        benchmarks="mbpp",
        limit=1,
        temperature=1.0,
        num_draft_tokens=2,
        thinking=True,
        data_dir="packaged",
        out_dir=tmp_path / "ev",
        progress=False,
        plots=False,
    )
    p = res.results.protocol
    assert (p.temperature, p.num_draft_tokens, p.thinking, p.thinking_source) == (1.0, 2, True, "override")
    assert len(res.results.benchmarks["mbpp"].acceptance_unconditional) == 2
    assert (tmp_path / "ev" / "results.json").is_file() and not (tmp_path / "ev" / "tau.png").exists()


@pytest.mark.parametrize(
    ("name", "target", "want"),
    [("auto", torch.float32, torch.bfloat16), ("auto", torch.bfloat16, torch.bfloat16),
     ("float32", torch.float32, torch.float32), ("bfloat16", torch.float32, torch.bfloat16)],
)
@pytest.mark.parametrize("fast_bf16", [True, False])
def test_the_draft_decodes_in_bf16_beside_an_fp32_target_on_any_cpu(monkeypatch, name, target, want, fast_bf16):
    """Decoding products are few-row and bound by reading weights: bf16 pays with or without
    native bf16 (docs/hardware.md), so the CPU's flags do not enter the choice."""
    from deepspec_core import hardware
    from deepspec_core.eval import loading

    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert loading.decode_draft_dtype(name, target, torch.device("cpu")) == want
    # on a GPU "auto" is the target's dtype
    assert loading.decode_draft_dtype("auto", torch.float32, torch.device("cuda")) == torch.float32


def test_models_are_not_packed_where_the_copy_would_not_fit_in_memory(monkeypatch, tmp_path, tiny_target):
    from deepspec_core import hardware

    monkeypatch.setattr(hardware, "available_memory_bytes", lambda: 1 << 20)  # 1 MiB free
    loaded = load_draft(_run_dir(tmp_path, tiny_target, "dflash"), draft_dtype="float32")
    assert loaded.draft.param_dtype == torch.float32  # packable, were there room
    assert not is_packed(loaded.target.model) and not is_packed(loaded.draft)


def test_checkpoint_resolution_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


def _mbpp_eval_args(run, limit: int, max_new_tokens: int) -> list[str]:
    """`deepspec eval` arguments for the packaged offline mbpp prompts."""
    return ["eval", "--draft", str(run), "--benchmarks", "mbpp", "--limit", str(limit),
            "--data-dir", "packaged", "--max-new-tokens", str(max_new_tokens)]


def test_cli_eval(tmp_path, tiny_target):
    run = _run_dir(tmp_path, tiny_target, "dflash")
    cli = CliRunner()
    res = cli.invoke(app, [*_mbpp_eval_args(run, limit=1, max_new_tokens=6), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "τ" in res.output and "mbpp" in res.output
    assert (tmp_path / "o" / "results.json").is_file()
    # --draft-dtype: recorded in the protocol; --speed adds the round cost column
    res = cli.invoke(app, [*_mbpp_eval_args(run, limit=1, max_new_tokens=6), "--out", str(tmp_path / "b"),
                           "--draft-dtype", "bfloat16", "--speed"])
    assert res.exit_code == 0, res.output
    written = json.loads((tmp_path / "b" / "results.json").read_text())
    assert written["protocol"]["draft_dtype"] == "bfloat16"
    assert written["benchmarks"]["mbpp"]["speed"]["round_cost"] > 0 and "speedup" in res.output
    bad = cli.invoke(app, [*_mbpp_eval_args(run, limit=1, max_new_tokens=6), "--draft-dtype", "fp8"])
    assert bad.exit_code == 1 and "unknown dtype 'fp8'" in bad.output and "Traceback" not in bad.output
    bad = cli.invoke(app, ["eval", "--draft", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and "does not exist" in bad.output
    bad = cli.invoke(app, ["eval", "--draft", str(run), "--benchmarks", "gsm9k", "--data-dir", "packaged"])
    assert bad.exit_code == 2 and "unknown benchmark" in bad.output


def test_prompts_split_over_processes_give_the_same_results(tmp_path, tiny_target):
    """torchrun with 2 CPU processes (gloo): each decodes every other prompt; the merged results
    equal a single process's, because sample i always decodes with seed + i."""
    import os
    import subprocess
    import sys

    run = _run_dir(tmp_path, tiny_target, "eagle3")
    args = [*_mbpp_eval_args(run, limit=3, max_new_tokens=8), "--temperature", "1", "--save-outputs"]
    single = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "deepspec_cli.main",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert one["benchmarks"]["mbpp"] == two["benchmarks"]["mbpp"]
    assert (tmp_path / "one" / "outputs" / "mbpp.jsonl").read_text() == (
        tmp_path / "two" / "outputs" / "mbpp.jsonl"
    ).read_text()


def test_a_draft_evaluated_with_a_target_of_other_sizes_is_one_line(tmp_path, tiny_target):
    """--target of another width: one line naming both targets and the first differing shape."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    run = _run_dir(tmp_path, tiny_target, "dflash")
    other = tmp_path / "other-target"
    cfg = AutoConfig.from_pretrained(tiny_target)
    cfg.hidden_size, cfg.intermediate_size = cfg.hidden_size * 2, cfg.intermediate_size * 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_target).save_pretrained(other)
    res = CliRunner().invoke(app, ["eval", "--draft", str(run), "--target", str(other), "--data-dir", "packaged"])
    line = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in res.output and "unexpected" not in res.output, res.output
    assert f"was trained for target {tiny_target}, not --target {other}" in line
    assert "has shape (" in line and "drop --target" in line
