"""Named run specs: the tiny presets for the embedded target and the paper recipes.

A preset is ``tiny-<algo>`` or ``<algo>-<target>`` for every registered draft algorithm; the
draft's own knobs per target size come from its spec class (``PRESETS`` in ``drafts/<algo>.py``).
``data(name)`` returns the preset as plain spec data; ``deepspec_core.spec.load_spec`` validates it.
"""

from __future__ import annotations

from typing import Any

from deepspec_core.errors import SpecError
from deepspec_core.specbase import PresetSize
from deepspec_core.targets.tiny_data import MASK, SPECIAL_TOKENS

# The tiny tokenizer's special tokens take the first ids, in order; <|mask|> is an unused row.
TINY_MASK_TOKEN_ID = SPECIAL_TOKENS.index(MASK)

# -- paper recipes ----------------------------------------------------------------------------
# Target facts (docs/reference.md, targets and training recipe): captured layers, mask token (an unused embedding row).
PAPER_TARGETS = {
    "qwen3-4b": dict(model="Qwen/Qwen3-4B", layer_ids=[1, 9, 17, 25, 33], mask_token_id=151669),
    "qwen3-8b": dict(model="Qwen/Qwen3-8B", layer_ids=[1, 9, 17, 25, 33], mask_token_id=151669),
    "qwen3-14b": dict(model="Qwen/Qwen3-14B", layer_ids=[1, 10, 19, 28, 37], mask_token_id=151669),
    "gemma4-12b": dict(model="google/gemma-4-12b-it", layer_ids=[5, 17, 29, 41, 46], mask_token_id=4),
}


def _draft(algo: str, size: PresetSize) -> dict[str, Any]:
    from deepspec_core.drafts import DRAFTS

    return DRAFTS.get(algo).spec_class.preset(size).model_dump(mode="json", exclude_none=True)


def _paper(algo: str, target: str) -> dict[str, Any]:
    # Qwen3 and Gemma ship their chat templates in the tokenizer; thinking is off as in the paper.
    return dict(
        name=f"{algo}-{target}",
        project="deepspec",
        target=dict(**PAPER_TARGETS[target], thinking=False),
        data=dict(train=["data/perfectblend.regen.jsonl"], eval=["data/perfectblend.heldout.regen.jsonl"]),
        draft=_draft(algo, "paper"),
        train=dict(lr=6e-4, warmup_ratio=0.04, grad_clip=1.0, global_batch_size=512, epochs=10),
        eval=dict(temperature=1.0, max_new_tokens=2048),
    )


# -- tiny presets for the embedded target ----------------------------------------------------


def _tiny(algo: str) -> dict[str, Any]:
    return dict(
        name=f"tiny-{algo}",
        project="tiny",
        target=dict(model="tiny", layer_ids=[0, 1, 2], thinking=False, mask_token_id=TINY_MASK_TOKEN_ID),
        data=dict(train=["tiny-data/train.regen.jsonl"], max_length=256, min_loss_tokens=4),
        cache=dict(batch_size=16, shard_size_mb=32),
        draft=_draft(algo, "tiny"),
        train=dict(
            lr=3e-3,
            global_batch_size=16,
            micro_batch_size=8,
            epochs=4,
            save_every=100,
            log_every=5,
            val_every=50,
            val_samples=16,
            num_workers=0,
        ),
        eval=dict(benchmarks=["humaneval", "mbpp"], temperature=0.0, max_new_tokens=64, limit=8),
    )


def _all() -> dict[str, tuple[str, str | None]]:
    """Preset name → (algorithm, paper target or None for tiny)."""
    from deepspec_core.drafts import DRAFTS

    out: dict[str, tuple[str, str | None]] = {}
    for algo in DRAFTS.registered():
        out[f"tiny-{algo}"] = (algo, None)
        out.update({f"{algo}-{target}": (algo, target) for target in PAPER_TARGETS})
    return out


def names() -> list[str]:
    return sorted(_all())


def data(name: str) -> dict[str, Any]:
    """The preset ``name`` as spec data. Raises SpecError listing the presets for an unknown name."""
    found = _all().get(name)
    if found is None:
        raise SpecError(f"unknown preset {name!r}", f"choose one of: {', '.join(names())}")
    algo, target = found
    return _tiny(algo) if target is None else _paper(algo, target)
