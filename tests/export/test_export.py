"""`deepspec export`: the exact tensors and config each engine's draft class declares, written from a
real checkpoint; mutations of an export (a dropped d2t, lm_head or norm, shifted layer ids) are
caught by the exporter's own check; drafts an engine would load silently wrong are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from export_helpers import MAX_NEW, PROMPTS
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.errors import ExportError
from deepspec_core.export import export_draft, layouts, verify_export
from deepspec_core.spec import algorithms

pytestmark = pytest.mark.integration


CASES = [(a, sets) for a in algorithms() for sets in ([], ["draft.draft_vocab_size=64"])] + [
    ("dflash", ["draft.predict_from_anchor=false"])]


@pytest.mark.parametrize(("algo", "sets"), CASES)
def test_vllm_export_has_exactly_the_engines_tensors_and_config(checkpoint, tmp_path, algo, sets):
    step, spec = checkpoint(algo, *sets)
    res = CliRunner().invoke(app, ["export", str(step), "--format", "vllm", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "vllm serve" in res.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    tensors = load_file(str(tmp_path / "out" / "model.safetensors"))
    vocab = 2048  # the quick tiny target's
    assert {n: tuple(t.shape) for n, t in tensors.items()} == layouts.vllm_tensors(config, vocab)
    assert not any(n.startswith(("embed_tokens", "target_head")) for n in tensors)  # no frozen target tensors
    for name, t in tensors.items():
        want = {"d2t": torch.int64, "t2d": torch.bool}.get(name, torch.float32 if "confidence" in name else torch.bfloat16)
        assert t.dtype == want, name
    aux = [i + 1 for i in spec.target.layer_ids]  # vLLM captures the hidden state before layer j
    tl = config["transformer_layer_config"]
    assert tl["num_hidden_layers"] == spec.draft.num_layers and tl["hidden_size"] == 128 and tl["head_dim"] == 64
    assert config["speculators_config"]["verifier"]["name_or_path"] == str(spec.target.model)
    reduced = bool(sets and "vocab" in sets[0])
    assert ("d2t" in tensors) == ("lm_head.weight" in tensors) == reduced
    if reduced:
        assert int(tensors["t2d"].sum()) == 64 and torch.equal(torch.arange(64) + tensors["d2t"],
                                                               tensors["t2d"].nonzero().squeeze(-1))
    k = config["speculators_config"]["proposal_methods"][0]["speculative_tokens"]
    if algo == "eagle3":
        assert config["speculators_model_type"] == "eagle3" and config["eagle_aux_hidden_state_layer_ids"] == aux
        assert config["norm_before_residual"] is False and k == spec.draft.ttt_length
        return
    assert config["aux_hidden_state_layer_ids"] == aux and config["mask_token_id"] == spec.target.mask_token_id
    assert "sliding_window_non_causal" not in config  # false would make every vLLM DFlash layer causal
    assert k == spec.draft.block_size
    if spec.draft.predict_from_anchor:
        # vLLM's DFlash has only the original layout: anchor-predicting blocks run on its DSpark runtime
        assert config["speculators_model_type"] == "dspark" and config["sample_from_anchor"] is True
        assert config["block_size"] == spec.draft.block_size
        if algo == "dflash":
            assert not tensors["markov_head.markov_w2.weight"].any()  # the stand-in Markov head adds zero
    else:
        assert config["speculators_model_type"] == "dflash" and config["block_size"] == spec.draft.block_size + 1


@pytest.mark.parametrize(
    ("algo", "drop", "says"),
    [("eagle3", "d2t", "missing d2t"), ("eagle3", "lm_head.weight", "missing lm_head.weight"),
     ("dflash", "norm.weight", "missing norm.weight"), ("dspark", "hidden_norm.weight", "missing hidden_norm")],
)
def test_a_tensor_dropped_from_an_export_is_caught(checkpoint, tmp_path, algo, drop, says):
    step, _ = checkpoint(algo, "draft.draft_vocab_size=64")
    out = tmp_path / "out"
    export_draft(step, "vllm", out)
    tensors = load_file(str(out / "model.safetensors"))
    del tensors[drop]
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(ExportError, match=says):
        verify_export(out, "vllm", step)


@pytest.mark.parametrize("fmt", ["vllm", "sglang"])
def test_shifted_layer_ids_and_a_changed_tensor_are_caught(checkpoint, tmp_path, fmt):
    step, _ = checkpoint("dflash", "draft.predict_from_anchor=false")
    out = tmp_path / "out"
    export_draft(step, fmt, out)
    config = json.loads((out / "config.json").read_text())
    ids = config["aux_hidden_state_layer_ids"] if fmt == "vllm" else config["dflash_config"]["target_layer_ids"]
    ids[:] = [i - 1 for i in ids]  # the classic off-by-one between the two conventions
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="layer ids"):
        verify_export(out, fmt, step)
    export_draft(step, fmt, out, overwrite=True)
    tensors = load_file(str(out / "model.safetensors"))
    tensors["fc.weight"] = tensors["fc.weight"].flip(0).contiguous()
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(ExportError, match="fc.weight differs"):
        verify_export(out, fmt, step)


def test_sglang_export_of_original_dflash_and_refusals(checkpoint, tmp_path):
    step, spec = checkpoint("dflash", "draft.predict_from_anchor=false")
    ex = export_draft(step, "sglang", tmp_path / "sg")
    config = json.loads((tmp_path / "sg" / "config.json").read_text())
    assert config["architectures"] == ["DFlashDraftModel"]
    assert config["dflash_config"]["target_layer_ids"] == spec.target.layer_ids  # SGLang counts from 0
    assert ex.tensors == layouts.sglang_tensors(config, 2048) and "--speculative-algorithm DFLASH" in ex.launch[0]
    cli = CliRunner()
    for algo, sets, says in [("eagle3", [], "LlamaForCausalLMEagle3 would load this draft silently wrong"),
                             ("dflash", [], "predicts from its anchor"),
                             ("dspark", [], "no SGLang format")]:
        step, _ = checkpoint(algo, *sets)
        res = cli.invoke(app, ["export", str(step), "--format", "sglang", "--out", str(tmp_path / f"x-{algo}")])
        assert res.exit_code == 1 and says in res.output, res.output
        assert not (tmp_path / f"x-{algo}").exists()  # nothing half-written


def test_vllm_refusals_name_the_reason(checkpoint, tmp_path):
    cli = CliRunner()
    step, _ = checkpoint("dspark", "draft.sequential_head='rnn'", "draft.markov_rank=8")
    res = cli.invoke(app, ["export", str(step), "--out", str(tmp_path / "a")])
    assert res.exit_code == 1 and "vanilla Markov head" in res.output
    step, _ = checkpoint("dspark")
    res = cli.invoke(app, ["export", str(step), "--out", str(tmp_path / "b"), "--k", "2"])
    assert res.exit_code == 1 and "exactly k slots" in res.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    res = cli.invoke(app, ["export", str(step), "--out", str(tmp_path / "full")])
    assert res.exit_code == 1 and "already holds files" in res.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    res = cli.invoke(app, ["export", str(step), "--format", "tgi", "--out", str(tmp_path / "c")])
    assert res.exit_code == 1 and "unknown --format" in res.output


@pytest.mark.parametrize("algo", ["eagle3", "dflash"])
def test_an_export_imported_back_scores_the_same_tau(trained, tmp_path, algo):
    """`deepspec eval --draft EXPORT_DIR` reads the speculators format: same protocol, same rounds."""
    t = trained[algo]
    export = tmp_path / f"export-{algo}"
    shutil.copytree(t.export.out_dir, export)
    res = CliRunner().invoke(app, ["eval", "--draft", str(export), "--benchmarks", "humaneval",
                                   "--limit", str(PROMPTS), "--max-new-tokens", str(MAX_NEW), "--temperature", "0",
                                   "--data-dir", "packaged"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in export.iterdir()) == ["config.json", "model.safetensors"]  # nothing written into it
    imported = json.loads((tmp_path / f"export-{algo}-eval" / "results.json").read_text())
    ours = t.evaluation.results
    assert imported["protocol"]["algorithm"] == algo
    assert imported["protocol"]["num_draft_tokens"] == ours.protocol.num_draft_tokens
    mine, theirs = ours.benchmarks["humaneval"], imported["benchmarks"]["humaneval"]
    assert theirs["accept_length_counts"] == mine.accept_length_counts and theirs["tau"] == mine.tau


def test_out_is_never_anything_but_a_new_directory_or_a_previous_export(checkpoint, tmp_path, monkeypatch):
    """--overwrite replaces a previous export only; a failed check keeps what --out held."""
    step, _ = checkpoint("eagle3")
    cli = CliRunner()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    (tmp_path / "afile").write_text("keep")
    for out, says in [(step.parent, "holds the checkpoint"), (step, "holds the checkpoint"),
                      (tmp_path / "notes", "previous export only"), (tmp_path / "afile", "is a file")]:
        res = cli.invoke(app, ["export", str(step), "--out", str(out), "--overwrite"])
        assert res.exit_code == 1 and says in res.output and "Traceback" not in res.output, res.output
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep" and (step / "model.safetensors").is_file()
    good = export_draft(step, "vllm", tmp_path / "export")
    before = (good.out_dir / "config.json").read_text()
    real = layouts.vllm_tensors
    monkeypatch.setattr(layouts, "vllm_tensors", lambda c, v: {**real(c, v), "an.extra.weight": (1,)})
    with pytest.raises(ExportError, match="nothing was kept.*missing an.extra.weight"):
        export_draft(step, "vllm", good.out_dir, overwrite=True)
    assert (good.out_dir / "config.json").read_text() == before
    assert not list(tmp_path.glob(".export.tmp*"))  # no temporary left behind


def test_k_is_checked_and_an_sglang_export_is_not_read_back(checkpoint, tmp_path):
    cli = CliRunner()
    step, _ = checkpoint("dflash", "draft.predict_from_anchor=false")
    for k, says in [("0", "at least one token"), ("3", "exactly k slots")]:
        res = cli.invoke(app, ["export", str(step), "--out", str(tmp_path / f"k{k}"), "--k", k])
        assert res.exit_code == 1 and says in res.output, res.output
    eagle, _ = checkpoint("eagle3")
    longer = export_draft(eagle, "vllm", tmp_path / "eagle-k9", k=9)
    assert longer.k == 9 and any("beyond" in n for n in longer.notes)
    export_draft(step, "sglang", tmp_path / "sg")
    res = cli.invoke(app, ["eval", "--draft", str(tmp_path / "sg"), "--data-dir", "packaged"])
    assert res.exit_code == 1 and "SGLang's format" in res.output, res.output
