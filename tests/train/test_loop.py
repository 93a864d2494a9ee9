"""The training loop end to end on the quick tiny target (online features, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from deepspec_core.errors import CheckpointError
from deepspec_core.spec import Schedule, TrainSpec
from deepspec_core.train.loop import Runtime, lr_at, train

pytestmark = pytest.mark.integration


def _quiet(messages=None):
    return Runtime(progress=False, say=(messages.append if messages is not None else lambda m: None))


def _weights(step_dir):
    return load_file(str(step_dir / "model.safetensors"))


def test_schedule_warms_up_then_decays_to_the_floor():
    t = TrainSpec(lr=1.0, min_lr_ratio=0.1)
    s = Schedule(grad_accum_steps=1, steps_per_epoch=10, total_steps=10, warmup_steps=2)
    lrs = [lr_at(i, s, t) for i in range(10)]
    assert lrs[:2] == [0.5, 1.0]
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    # HF convention: the floor is where the schedule would be after the last update.
    assert 0.1 < lrs[-1] < 0.15 and lr_at(10, s, t) == pytest.approx(0.1)


def test_interrupted_and_resumed_run_is_bit_identical(make_spec, feature_cache, tmp_path):
    """Offline cache read by a DataLoader worker; interrupted at step 4 (last checkpoint), resumed."""
    offline = ("cache.online=false", f"cache.path='{feature_cache}'", "train.num_workers=1")
    full = train(make_spec("dflash", *offline, root=tmp_path / "a"), _quiet())
    assert full.finished and full.steps == 6

    spec_b = make_spec("dflash", *offline, root=tmp_path / "b")
    part = train(spec_b, Runtime(progress=False, say=lambda m: None, stop_after=4))
    assert not part.finished and part.steps == 4 and part.checkpoint.name == "step_4"
    messages: list[str] = []
    rest = train(spec_b, _quiet(messages))
    assert rest.resumed_from == 4 and rest.finished
    assert any("resuming" in m and "step_4" in m for m in messages)

    a, b = _weights(full.checkpoint), _weights(rest.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(x) for x in (rest.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == [2, 4, 6]
    # Retention: keep_last=3 of step_3, step_4, step_6 (saved every 3 and at the stop).
    assert sorted(p.name for p in rest.run_dir.glob("step_[0-9]*")) == ["step_3", "step_4", "step_6"]
    assert (rest.run_dir / "step_latest").resolve() == rest.checkpoint


def test_rerun_resumes_a_finished_run_and_a_changed_spec_is_refused(make_spec):
    spec = make_spec("dflash", "train.max_steps=2", "train.val_samples=0")
    first = train(spec, _quiet())
    # The reference optimiser: torch's default AdamW betas.
    opt = torch.load(first.run_dir / "step_2" / "training_state" / "optimizer.pt", weights_only=False)
    assert spec.train.betas == (0.9, 0.999) and opt["param_groups"][0]["betas"] == (0.9, 0.999)
    messages: list[str] = []
    again = train(make_spec("dflash", "train.max_steps=2", "train.val_samples=0", "train.log_every=1"), _quiet(messages))
    assert again.resumed_from == 2 and again.steps == 2 and any("resuming" in m for m in messages)
    with pytest.raises(CheckpointError, match=r"train\.lr"):
        train(make_spec("dflash", "train.max_steps=2", "train.val_samples=0", "train.lr=1e-2"), _quiet())
    fresh = train(make_spec("dflash", "train.max_steps=2", "train.val_samples=0", "train.lr=1e-2"),
                  Runtime(progress=False, say=lambda m: None, fresh=True))
    assert fresh.resumed_from is None and fresh.run_dir == first.run_dir


@pytest.mark.parametrize("algo", ["eagle3", "dflash", "dspark"])
def test_each_algorithm_learns(make_spec, algo):
    """A few steps on the tiny target move validation loss and the τ estimates the right way."""
    spec = make_spec(algo, "train.max_steps=8", "train.val_every=8", "train.save_every=8", "train.micro_batch_size=8")
    result = train(spec, _quiet())
    val = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r for r in val if r["kind"] == "val"}
    before, after = val[0], val[8]
    assert after["loss"] < before["loss"]
    assert after["tau_expected"] > before["tau_expected"] + 0.15
    assert after["tau_greedy"] > 1.0
    assert len(after["accept_per_pos"]) == spec.num_draft_tokens()


def test_sigterm_asks_for_a_checkpoint_instead_of_dying():
    import os
    import signal

    from deepspec_core.distributed import DistEnv
    from deepspec_core.train.launch import StopRequest

    before = signal.getsignal(signal.SIGTERM)
    notes: list[str] = []
    with StopRequest(notes.append) as req:
        assert not req.agreed(DistEnv(), torch.device("cpu"))
        os.kill(os.getpid(), signal.SIGTERM)
        assert req.agreed(DistEnv(), torch.device("cpu")) and "SIGTERM" in notes[0]
    assert signal.getsignal(signal.SIGTERM) is before


def test_online_training_with_no_usable_sample_fails_clearly_and_claims_nothing(make_spec, tmp_path):
    """Online mode tokenises like the cache: every sample cut below min_loss_tokens is one error
    naming the file and the fix, and the run directory stays free for the corrected command."""
    from deepspec_core.errors import DataError

    spec = make_spec("dflash", "data.max_length=20", "data.min_loss_tokens=8")
    with pytest.raises(DataError) as info:
        train(spec, _quiet())
    assert "no usable training sample in" in info.value.message and "0 of 105 kept" in info.value.message
    assert "too few loss tokens: 105 (raise data.max_length or lower data.min_loss_tokens)" in info.value.message
    assert not (spec.run_dir() / "spec.toml").exists()
    messages: list[str] = []
    res = train(make_spec("dflash", "train.max_steps=1", "train.val_samples=0"), _quiet(messages))
    assert res.steps == 1
    assert ("data: 103 of 105 conversations usable, 86 cut to data.max_length = 96; skipped — too few loss "
            "tokens: 2 (raise data.max_length or lower data.min_loss_tokens)") in messages


@pytest.mark.parametrize("source", ["online", "cache"])
def test_a_reduced_vocabulary_is_the_most_frequent_supervised_training_tokens(make_spec, feature_cache, chat_file,
                                                                             tiny_target, tmp_path, source):
    """draft.draft_vocab_size = 64: after one step the checkpoint's t2d marks exactly the 64 most
    frequent supervised tokens of the training samples (held-out samples excluded), counted
    independently here; the cache path takes the counts its manifest recorded."""
    from transformers import AutoTokenizer

    from deepspec_core.data.tokenize import iter_tokenized
    from deepspec_core.drafts.base import build_vocab_mapping

    sets = ["draft.draft_vocab_size=64", "train.max_steps=1", "train.val_samples=8"]
    if source == "cache":
        sets += ["cache.online=false", f"cache.path='{feature_cache}'"]
    messages: list[str] = []
    res = train(make_spec("dspark", *sets), _quiet(messages))
    tok = AutoTokenizer.from_pretrained(tiny_target)
    samples = [s for _, s in iter_tokenized(chat_file, tok, 96, False, min_loss_tokens=8)]
    counts = torch.zeros(len(tok), dtype=torch.long)
    for s in samples[:-8]:  # the last val_samples are held out
        ids = torch.tensor(s.input_ids)[torch.tensor(s.loss_mask).bool()]
        counts += torch.bincount(ids, minlength=counts.numel())
    _, want = build_vocab_mapping(counts, 64)
    got = _weights(res.checkpoint)["t2d"]
    assert torch.equal(got, want) and int(got.sum()) == 64
    assert not torch.equal(got[:64], torch.ones(64, dtype=torch.bool))  # not simply ids 0..63
    covered = float(counts[want].sum() / counts.sum())
    assert f"cover {covered:.1%} of the training targets" in " ".join(messages)


@pytest.mark.parametrize("algo", ["dflash", "dspark"])
def test_a_block_draft_without_a_mask_token_is_told_at_the_start_that_engines_cannot_load_it(make_spec, algo,
                                                                                               tmp_path):
    """Without target.mask_token_id the draft learns its own mask embedding, which `deepspec export`
    refuses for vLLM / SGLang: training says so before the first step, not after the last."""
    spec = make_spec(algo, "train.max_steps=1", "train.val_samples=0")
    unset = spec.model_copy(update={"target": spec.target.model_copy(update={"mask_token_id": None})})
    told: list[str] = []
    train(unset, _quiet(told))
    assert any(m.startswith("note: target.mask_token_id is unset") for m in told), told
    quiet: list[str] = []
    train(make_spec(algo, "train.max_steps=1", "train.val_samples=0", root=tmp_path / "set"), _quiet(quiet))
    assert not any("mask_token_id" in m for m in quiet), quiet


def test_ctrl_c_checkpoints_exits_130_and_shows_when_validation_was_measured(make_spec, tmp_path):
    """`deepspec train` with its output in a file: Ctrl-C finishes the step, checkpoints, prints on a
    line of its own, reports the last validation with its step, and exits 130; a rerun resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from deepspec_core.spec import save_spec

    spec = make_spec("dflash", "train.max_steps=400", "train.save_every=400", "train.val_every=400")
    path = tmp_path / "spec.toml"
    save_spec(spec, path)
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-c", "from deepspec_cli.main import main; main()", "train", str(path)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
        deadline = time.time() + 300
        while "training dflash" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 130
    lines = log.read_text().splitlines()
    assert any(line.startswith("SIGINT: stopping after this step") for line in lines), lines
    stopped = next(line for line in lines if line.startswith("stopped at step "))
    step = int(stopped.split()[3])
    assert 0 < step < 400 and (spec.run_dir() / f"step_{step}").is_dir()
    assert any("val τ estimate (step 0)" in line for line in lines) and any("stopped by SIGINT" in line for line in lines)
    again = train(make_spec("dflash", "train.max_steps=400", "train.save_every=400", "train.val_every=400"),
                  Runtime(progress=False, say=lambda m: None, stop_after=step + 1))
    assert again.resumed_from == step


def test_ctrl_c_in_a_terminal_stops_cleanly_while_cache_workers_decode(make_spec, feature_cache, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, DataLoader workers included: training
    still finishes its step, checkpoints and exits 130, with no crash (the workers ignore it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from deepspec_core.spec import save_spec

    # 16 micro-batches per step: more than the workers prefetch (2 x 4), so the step after the
    # signal needs batches that only live workers can still deliver.
    offline = ("cache.online=false", f"cache.path='{feature_cache}'", "train.num_workers=2",
               "train.global_batch_size=64", "train.micro_batch_size=4")
    spec = make_spec("dflash", *offline, "train.max_steps=400", "train.save_every=400", "train.val_every=400")
    path = tmp_path / "spec.toml"
    save_spec(spec, path)
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-c", "from deepspec_cli.main import main; main()", "train", str(path)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "COLUMNS": "200"})
        deadline = time.time() + 300
        while "training dflash" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: every process of the group
        code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 130 and "unexpected" not in text, text
    stopped = next(line for line in text.splitlines() if line.startswith("stopped at step "))
    assert (spec.run_dir() / f"step_{int(stopped.split()[3])}").is_dir()


def test_a_crash_in_training_leaves_its_traceback_beside_the_run(make_spec, tmp_path, monkeypatch):
    """A bug five hours in (here: the schedule raising a plain TypeError once the run directory is
    claimed) prints one line naming a crash log in the run directory, which holds the traceback."""
    from typer.testing import CliRunner

    from deepspec_cli.main import app
    from deepspec_core.spec import save_spec
    from deepspec_core.train import loop

    def boom(*_a, **_k):
        raise TypeError("shape bug deep inside")

    monkeypatch.setattr(loop, "derive_schedule", boom)
    monkeypatch.setenv("DEEPSPEC_DEBUG", "0")
    spec = make_spec("dflash")
    save_spec(spec, tmp_path / "spec.toml")
    res = CliRunner().invoke(app, ["train", str(tmp_path / "spec.toml")])
    assert res.exit_code == 1 and "unexpected TypeError: shape bug deep inside" in res.output
    logs = list(spec.run_dir().glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in " ".join(res.output.split())
    assert "in boom" in logs[0].read_text() and "Traceback" not in res.output


def test_a_compiled_training_run_equals_the_eager_one(make_spec, tmp_path):
    """train.compile: the draft's layers through torch.compile (CPU inductor here) train to the same
    weights as eager, within float reassociation."""
    sets = ("train.max_steps=2", "train.val_samples=0", "train.save_every=2", "train.val_every=2")
    eager = train(make_spec("eagle3", *sets, root=tmp_path / "eager"), _quiet())
    messages: list[str] = []
    compiled = train(make_spec("eagle3", *sets, "train.compile=true", root=tmp_path / "compiled"), _quiet(messages))
    assert any("torch.compile" in m for m in messages)
    a, b = _weights(eager.checkpoint), _weights(compiled.checkpoint)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)


@pytest.mark.parametrize("algo", ["dflash", "dspark"])
def test_init_layers_start_the_draft_from_the_target_layers_and_training_moves_them(make_spec, tiny_target,
                                                                                    tmp_path, algo):
    from transformers import AutoModelForCausalLM

    from deepspec_core.assembly import assemble

    spec = make_spec(algo, "draft.num_layers=2", "draft.init_layers=[3, 1]")
    target = AutoModelForCausalLM.from_pretrained(tiny_target, dtype=torch.float32)
    draft = assemble(spec, "cpu", load_target=False).draft
    for layer, i in zip(draft.layers, [3, 1], strict=True):
        want = target.model.layers[i].state_dict()
        for name, param in layer.layer.named_parameters():
            assert torch.equal(param, want[name].to(param.dtype)), (i, name)
    assert torch.equal(draft.norm.weight, target.model.norm.weight.to(draft.norm.weight.dtype))
    # through the loop the CLI runs: the checkpoint starts there and moves from there
    result = train(spec, _quiet())
    assert result.finished
    trained = _weights(result.run_dir / "step_latest")
    q = trained["layers.0.layer.self_attn.q_proj.weight"]
    start = target.model.layers[3].self_attn.q_proj.weight
    assert not torch.equal(q, start) and (q - start).abs().max() < 0.1
    # a checkpoint's weights win over the target's (evaluation and resume rebuild from the run)
    again = assemble(spec, "cpu", load_target=False, weights_dir=result.run_dir / "step_latest").draft
    assert torch.equal(again.layers[0].layer.self_attn.q_proj.weight, q)


@pytest.mark.parametrize(("sets", "message"), [
    (("draft.num_layers=2", "draft.init_layers=[3]"), "draft.init_layers has 1 ids for 2 draft layers"),
    (("draft.init_layers=[4]",), "draft.init_layers [4] are outside the target's layers 0..3"),
    (("draft.init_layers=[1]", "draft.intermediate_size=64"), "draft.intermediate_size is 64"),
])
def test_init_layers_that_do_not_fit_the_target_are_refused_before_anything_is_written(make_spec, tmp_path,
                                                                                        sets, message):
    from deepspec_core.errors import SpecError

    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(make_spec("dflash", *sets), _quiet())
    assert not any(tmp_path.rglob("config.json"))


def test_bf16_autocast_on_a_cpu_without_native_bf16_trains_in_bf16_and_says_it_is_slow_here(
    make_spec, tmp_path, monkeypatch
):
    """train.mixed_precision = "bf16" is honoured on any CPU (the weights differ from fp32's), and
    where the CPU would emulate bf16 the run says so once, with the setting to change."""
    from deepspec_core.train import loop

    sets = ("train.max_steps=1", "train.val_samples=0", "train.save_every=1", "train.val_every=1")
    fp32 = train(make_spec("dflash", *sets, "train.mixed_precision=no", root=tmp_path / "fp32"), _quiet())
    notes = {}
    for native in (False, True):
        monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda native=native: native)
        messages: list[str] = []
        bf16 = train(make_spec("dflash", *sets, "train.mixed_precision=bf16", root=tmp_path / f"bf16-{native}"),
                     _quiet(messages))
        notes[native] = [m for m in messages if "without native bf16" in m]
    assert notes[True] == [] and len(notes[False]) == 1
    assert 'train.mixed_precision = "bf16"' in notes[False][0] and '"no"' in notes[False][0]
    a, b = _weights(fp32.checkpoint), _weights(bf16.checkpoint)
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)
