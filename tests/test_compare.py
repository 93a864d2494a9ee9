"""compare: protocol checks, domain means, gains, reports and plots, from results.json files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.compare import compare
from deepspec_core.decode.rounds import RoundOutcome
from deepspec_core.errors import DataError
from deepspec_core.eval.metrics import (
    BenchmarkInfo,
    EvalResults,
    Protocol,
    benchmark_result,
    macro_average,
    make_speed,
)

pytestmark = pytest.mark.unit

DOMAIN = {"gsm8k": "math", "math500": "math", "humaneval": "code", "mt-bench": "chat"}


def write_result(dir_, name, lengths_by_bench, temperature=1.0, samples=4, speed=None, algorithm="dflash",
                 per_prompt=False, **protocol_fields):
    """One results.json; with ``per_prompt`` each round length is its own prompt (samples = rounds)."""
    k = 3
    benches = {b: benchmark_result([RoundOutcome.of(n - 1, k, n) for n in ls], k,
                                   samples=len(ls) if per_prompt else samples,
                                   turns=len(ls) if per_prompt else samples,
                                   generated_tokens=sum(ls) + (len(ls) if per_prompt else samples),
                                   speed=make_speed(sum(ls), 2.0, 2.0 / speed) if speed else None,
                                   prompt_rounds=[[n, 1] for n in ls] if per_prompt else None)
               for b, ls in lengths_by_bench.items()}
    if per_prompt:
        samples = len(next(iter(lengths_by_bench.values())))
    fields = dict(
        target="tiny", draft=str(dir_ / name / "step_10"), algorithm=algorithm, temperature=temperature,
        max_new_tokens=64, thinking=False, thinking_source="draft", chat_template_hash="abc", all_turns=False,
        subset_seed=980406, draft_params={"block_size": k}, num_draft_tokens=k, seed=0, deepspec_version="0", device="cpu",
        dtype="float32",
        benchmarks=[BenchmarkInfo(name=b, domain=DOMAIN[b], samples=samples, content_hash=f"h-{b}", source="file")
                    for b in lengths_by_bench],
    )
    protocol = Protocol(**{**fields, **protocol_fields})
    res = EvalResults(protocol=protocol, benchmarks=benches, macro=macro_average(benches))
    out = dir_ / name / "eval" / "10"
    out.mkdir(parents=True)
    (out / "results.json").write_text(res.model_dump_json())
    return dir_ / name


@pytest.fixture
def runs(tmp_path):
    a = write_result(tmp_path, "run-a", {"gsm8k": [1, 2, 3], "math500": [2, 2], "humaneval": [1, 1], "mt-bench": [1]},
                     speed=1.2, algorithm="eagle3")
    b = write_result(tmp_path, "run-b", {"gsm8k": [4, 4, 4], "math500": [3, 3], "humaneval": [2, 2], "mt-bench": [2]},
                     speed=1.8)
    return a, b


def test_table_values_domain_means_and_gains(runs, tmp_path):
    c, written = compare(list(runs), out_dir=tmp_path / "cmp")
    assert [e.name for e in c.entries] == ["run-a", "run-b"]
    assert c.benchmarks == ["gsm8k", "math500", "humaneval", "mt-bench"]
    assert c.tau["gsm8k"] == {"run-a": 2.0, "run-b": 4.0}
    assert c.tau["math mean"]["run-b"] == pytest.approx((4 + 3) / 2)
    assert c.tau["macro"]["run-a"] == pytest.approx((2 + 2 + 1 + 1) / 4)
    assert c.gain("gsm8k", "run-b") == pytest.approx(1.0)
    assert c.speedup["macro"]["run-b"] == pytest.approx(1.8)
    names = {p.name for p in written}
    assert {"report.md", "summary.json", "acceptance_by_position.png", "tau_by_benchmark.png",
            "speedup_by_benchmark.png"} <= names
    for p in written:
        assert p.stat().st_size > 0
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| **macro** | 1.50 | 2.75 (+83.3%) |" in report
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["baseline"] == "run-a" and summary["tau"]["code mean"]["run-b"] == 2.0


def test_baseline_choice(runs):
    c, _ = compare(list(runs), baseline="run-b")
    assert c.gain("gsm8k", "run-a") == pytest.approx(-0.5)
    with pytest.raises(DataError, match="not one of the drafts"):
        compare(list(runs), baseline="nope")


def test_protocol_mismatch_is_refused_with_differences(tmp_path):
    a = write_result(tmp_path, "a", {"gsm8k": [1, 2]}, temperature=1.0)
    b = write_result(tmp_path, "b", {"gsm8k": [1, 2], "mt-bench": [1]}, temperature=0.0, samples=4)
    with pytest.raises(DataError) as info:
        compare([a, b])
    msg = info.value.message
    assert "temperature: a=1.0 vs b=0.0" in msg and "benchmarks:" in msg
    assert "--allow-protocol-mismatch" in info.value.hint
    c, _ = compare([a, b], allow_protocol_mismatch=True)
    assert len(c.mismatches) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("bonus_token_in_tau", False), ("all_turns", True), ("num_draft_tokens", 2), ("max_new_tokens", 32),
     ("thinking", True), ("chat_template_hash", "other"), ("subset_seed", 0), ("dtype", "bfloat16"),
     ("draft_dtype", "bfloat16")],
)
def test_every_field_that_moves_tau_is_compared(tmp_path, field, value):
    a = write_result(tmp_path, "a", {"gsm8k": [1, 2]})
    b = write_result(tmp_path, "b", {"gsm8k": [1, 2]}, **{field: value})
    with pytest.raises(DataError, match=f"{field}: a="):
        compare([a, b])
    c, _ = compare([a, b], allow_protocol_mismatch=True)
    assert any(d.startswith(f"{field}:") for d in c.mismatches)


def test_informational_fields_do_not_block_a_comparison(tmp_path):
    a = write_result(tmp_path, "a", {"gsm8k": [1, 2]}, algorithm="eagle3", seed=0, device="cpu")
    b = write_result(tmp_path, "b", {"gsm8k": [1, 2]}, algorithm="dspark", seed=7, device="cuda:H200")
    c, _ = compare([a, b])
    assert c.mismatches == []


def test_results_of_an_older_schema_are_refused(tmp_path):
    a = write_result(tmp_path, "a", {"gsm8k": [1, 2]})
    old = json.loads((a / "eval" / "10" / "results.json").read_text())
    old["schema_version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(DataError, match="schema 1.*never committed") as info:
        compare([a, tmp_path / "old.json"])
    assert "re-run `deepspec eval`" in info.value.hint


def test_sample_count_difference_is_a_mismatch(tmp_path):
    a = write_result(tmp_path, "a", {"gsm8k": [1, 2]}, samples=4)
    b = write_result(tmp_path, "b", {"gsm8k": [1, 2]}, samples=5)
    with pytest.raises(DataError, match="gsm8k samples: a=4 vs b=5"):
        compare([a, b])


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no results.json"):
        compare([tmp_path])
    bad = tmp_path / "results.json"
    bad.write_text('{"protocol": {}}')
    with pytest.raises(DataError, match="not a deepspec results.json"):
        compare([bad])


def test_cli(runs, tmp_path):
    res = CliRunner().invoke(app, ["compare", *map(str, runs), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "run-b" in res.output and "macro" in res.output and "report.md" in res.output
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no results.json" in res.output


def test_replicas_give_a_mean_and_its_spread(tmp_path):
    a = [write_result(tmp_path, f"a{i}", {"gsm8k": ls}) for i, ls in enumerate(([1, 1], [2, 2], [3, 3]))]
    b = write_result(tmp_path, "b", {"gsm8k": [4, 4]})
    c, written = compare([a, b], out_dir=tmp_path / "cmp")
    assert c.tau["gsm8k"] == {"a0": pytest.approx(2.0), "b": 4.0}
    assert c.spread["gsm8k"] == {"a0": pytest.approx(1.0)} and c.spread["macro"]["a0"] == pytest.approx(1.0)
    assert c.tau_text("gsm8k", "a0") == "2.00 ± 1.00" and c.tau_text("gsm8k", "b") == "4.00"
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| gsm8k | 2.00 ± 1.00 | 4.00 (+100.0%) |" in report and "over 3 replicas" in report
    res = CliRunner().invoke(app, ["compare", ",".join(map(str, a)), str(b)])
    assert res.exit_code == 0 and "2.00 ± 1.00" in res.output
    other = write_result(tmp_path, "a3", {"gsm8k": [2, 2]}, temperature=0.0)
    with pytest.raises(DataError, match="temperature: a0=1.0 vs a0#1=0.0"):
        compare([[a[0], other], b])


def test_one_draft_under_several_draft_length_policies_is_named_by_policy(tmp_path):
    a = write_result(tmp_path, "run", {"gsm8k": [2, 2]})
    thr = write_result(tmp_path / "t", "run", {"gsm8k": [2, 1]}, draft_length="threshold", draft_length_threshold=0.3)
    c, _ = compare([a, thr])
    assert [e.name for e in c.entries] == ["run@fixed", "run@threshold0.3"] and c.mismatches == []
    from deepspec_core.compare import plot_title

    assert "(fixed)" not in plot_title(c) and "(fixed)" in plot_title(compare([a])[0])
    # the SmolLM2 example's case: other drafts beside one draft under two policies, baseline by its name
    other = write_result(tmp_path / "o", "base", {"gsm8k": [1, 1]})
    c, _ = compare([other, a, thr], baseline="base")
    assert c.baseline == "base@fixed"
    with pytest.raises(DataError, match="--baseline 'run' is not one of the drafts"):
        compare([other, a, thr], baseline="run")  # two of them: which one is not guessed


@pytest.mark.parametrize(("target", "shown"), [("Qwen/Qwen3-4B", "target Qwen/Qwen3-4B ·"),
                                               ("/home/u/examples/work/target", "target work/target ·"),
                                               ("tiny", "target tiny ·")])
def test_plot_titles_name_the_target_by_its_last_two_path_components(tmp_path, target, shown):
    from deepspec_core.compare import plot_title

    a = write_result(tmp_path, "run", {"gsm8k": [2, 2]}, target=target)
    assert plot_title(compare([a])[0]).startswith(shown)


def test_intervals_over_prompts_and_paired_differences_in_table_report_and_summary(tmp_path):
    """With per-prompt rounds, every τ carries its bootstrap interval, and each draft's difference
    from the baseline a paired one: resolved for a draft better on every prompt, not for a tie."""
    base = [1, 2, 3, 1, 2, 3, 1, 3]
    a = write_result(tmp_path, "a", {"gsm8k": base, "mt-bench": base}, per_prompt=True)
    b = write_result(tmp_path, "b", {"gsm8k": [n + 1 for n in base], "mt-bench": [n + 1 for n in base]}, per_prompt=True)
    c_ = write_result(tmp_path, "c", {"gsm8k": base[::-1], "mt-bench": base[::-1]}, per_prompt=True)
    c, _ = compare([a, b, c_], out_dir=tmp_path / "cmp")
    lo, hi = c.ci["macro"]["a"]
    assert lo < c.tau["macro"]["a"] < hi
    assert c.resolved("macro", "b") and c.diff_ci["macro"]["b"][0] == pytest.approx(1.0)
    assert c.resolved("gsm8k", "c") is False  # as good on average, better on some prompts, worse on others
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert f"[{lo:.2f}, {hi:.2f}]" in report and "*resolved*" in report
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["diff_vs_baseline_ci95"]["macro"]["b"] == pytest.approx([1.0, 1.0])
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output


def test_intervals_come_from_the_results_and_are_computed_for_results_without_them(tmp_path):
    """compare shows the interval the evaluation stored (so report and results.json agree); a
    result written without one gets it from the same bootstrap over its per-prompt rounds."""
    base = [1, 2, 3, 1, 2, 3, 1, 3]
    a = write_result(tmp_path, "a", {"gsm8k": base, "mt-bench": base}, per_prompt=True)
    b = write_result(tmp_path, "b", {"gsm8k": base, "mt-bench": base}, per_prompt=True)
    path = a / "eval" / "10" / "results.json"
    raw = json.loads(path.read_text())
    computed = (raw["benchmarks"]["gsm8k"]["tau_ci95"], raw["macro"]["tau_ci95"])
    raw["benchmarks"]["gsm8k"]["tau_ci95"], raw["macro"]["tau_ci95"] = [1.25, 2.5], [1.5, 2.25]
    path.write_text(json.dumps(raw))
    path_b = b / "eval" / "10" / "results.json"
    raw_b = json.loads(path_b.read_text())
    raw_b["benchmarks"]["gsm8k"]["tau_ci95"] = raw_b["macro"]["tau_ci95"] = None
    path_b.write_text(json.dumps(raw_b))
    c, _ = compare([a, b])
    assert c.ci["gsm8k"]["a"] == (1.25, 2.5) and c.ci["macro"]["a"] == (1.5, 2.25)
    assert list(c.ci["gsm8k"]["b"]) == pytest.approx(computed[0]) and list(c.ci["macro"]["b"]) == pytest.approx(computed[1])
