"""Checkpoints for the export tests: freshly initialised drafts saved as training saves them, and
drafts trained briefly on the tiny target, evaluated by deepspec and exported (shared by the import
test and the vLLM tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from export_helpers import MAX_NEW, PROMPTS


@pytest.fixture
def checkpoint(make_spec, tmp_path):
    """A step directory of a freshly initialised ``algo`` draft, saved the way training saves it."""
    import torch

    from deepspec_core.assembly import assemble
    from deepspec_core.runs import RunDir, checkpoint_config
    from deepspec_core.spec import save_spec
    from deepspec_core.train.checkpoint import TrainState, save_checkpoint

    made = []

    def make(algo: str, *sets: str):
        made.append(algo)
        spec = make_spec(algo, *sets, f"name='{algo}-{len(made)}'", root=tmp_path / "runs")
        torch.manual_seed(0)
        parts = assemble(spec, "cpu", load_target=False)
        with torch.no_grad():  # a trained-looking draft: no tensor left at zero or one
            for p in parts.draft.parameters():
                if p.requires_grad:
                    p.normal_(std=0.05)
        run = RunDir(spec.run_dir())
        run.path.mkdir(parents=True)
        save_spec(spec, run.spec_path)
        config = checkpoint_config(spec, parts.draft, parts.target_path)
        return save_checkpoint(run, TrainState(step=1), parts.draft.trainable_state_dict(), config, None, [], 1), spec

    return make


@dataclass
class Trained:
    target: Path
    run_dir: Path
    evaluation: Any  # EvalResult of `deepspec eval` on PROMPTS humaneval prompts, greedy, outputs saved
    export: Any  # Exported (vLLM format)


@pytest.fixture(scope="session")
def trained(tiny_target, chat_file, tmp_path_factory) -> dict[str, Trained]:
    """Eagle3 and original-layout DFlash (the two vLLM serves on a CPU), 40 steps each."""
    from deepspec_core.eval.runner import evaluate
    from deepspec_core.export import export_draft
    from deepspec_core.spec import load_spec
    from deepspec_core.train.loop import Runtime, train

    out = tmp_path_factory.mktemp("trained")
    found = {}
    for algo, extra in [("eagle3", []), ("dflash", ["draft.predict_from_anchor=false"])]:
        spec = load_spec(f"tiny-{algo}", [
            f"target.model='{tiny_target}'", f"data.train=['{chat_file}']", "data.max_length=96",
            "cache.online=true", f"output.root='{out}'", "train.global_batch_size=8", "train.micro_batch_size=8",
            "train.val_samples=0", "train.max_steps=40", "train.save_every=40", "train.val_every=40",
            "train.tensorboard=false", "train.num_workers=0", *extra])
        run = train(spec, Runtime(progress=False, say=lambda _line: None, device="cpu")).run_dir
        ev = evaluate(run, benchmarks="humaneval", limit=PROMPTS, temperature=0.0, max_new_tokens=MAX_NEW,
                      data_dir="packaged", save_outputs=True, progress=False, plots=False)
        found[algo] = Trained(tiny_target, run, ev, export_draft(run, "vllm", out / f"export-{algo}"))
    return found
