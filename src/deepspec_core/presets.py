"""Named run specs: the tiny presets for the embedded target and the paper recipes.

Each preset is a plain function returning a :class:`RunSpec`; ``get(name)`` builds one.
"""

from __future__ import annotations

from collections.abc import Callable

from deepspec_core.registry import Registry
from deepspec_core.spec import (
    ALGOS,
    CacheSpec,
    DataSpec,
    DFlashSpec,
    DSparkSpec,
    Eagle3Spec,
    EvalSpec,
    RunSpec,
    TargetSpec,
    TrainSpec,
)
from deepspec_core.targets.tiny_data import MASK, SPECIAL_TOKENS

# The tiny tokenizer's special tokens take the first ids, in order; <|mask|> is an unused row.
TINY_MASK_TOKEN_ID = SPECIAL_TOKENS.index(MASK)

_PRESETS: Registry[Callable[[], RunSpec]] = Registry("preset")


def _draft(algo: str, **block_kw):
    if algo == "eagle3":
        return Eagle3Spec(ttt_length=block_kw.get("block_size", 7), num_layers=1)
    cls = DFlashSpec if algo == "dflash" else DSparkSpec
    return cls(**block_kw)


# -- paper recipes ----------------------------------------------------------------------------
# Target facts (docs/reference.md, targets and training recipe): captured layers, mask token (an unused embedding row).
_PAPER_TARGETS = {
    "qwen3-4b": dict(model="Qwen/Qwen3-4B", layer_ids=[1, 9, 17, 25, 33], mask_token_id=151669),
    "qwen3-8b": dict(model="Qwen/Qwen3-8B", layer_ids=[1, 9, 17, 25, 33], mask_token_id=151669),
    "qwen3-14b": dict(model="Qwen/Qwen3-14B", layer_ids=[1, 10, 19, 28, 37], mask_token_id=151669),
    "gemma4-12b": dict(model="google/gemma-4-12b-it", layer_ids=[5, 17, 29, 41, 46], mask_token_id=4),
}


def _paper(algo: str, target: str) -> RunSpec:
    # Qwen3 and Gemma ship their chat templates in the tokenizer; thinking is off as in the paper.
    return RunSpec(
        name=f"{algo}-{target}",
        project="deepspec",
        target=TargetSpec(**_PAPER_TARGETS[target], thinking=False),
        data=DataSpec(train=["data/perfectblend.regen.jsonl"], eval=["data/perfectblend.heldout.regen.jsonl"]),
        cache=CacheSpec(),
        draft=_draft(algo, block_size=7, num_layers=5, num_anchors=512),
        train=TrainSpec(lr=6e-4, warmup_ratio=0.04, grad_clip=1.0, global_batch_size=512, epochs=10),
        eval=EvalSpec(temperature=1.0, max_new_tokens=2048),
    )


# -- tiny presets for the embedded target ----------------------------------------------------


def _tiny(algo: str) -> RunSpec:
    return RunSpec(
        name=f"tiny-{algo}",
        project="tiny",
        target=TargetSpec(model="tiny", layer_ids=[0, 1, 2], thinking=False, mask_token_id=TINY_MASK_TOKEN_ID),
        data=DataSpec(
            train=["tiny-data/train.regen.jsonl"],
            max_length=256,
            min_loss_tokens=4,
        ),
        cache=CacheSpec(batch_size=16, shard_size_mb=32),
        draft=_draft(algo, block_size=4, num_layers=1, num_anchors=32)
        if algo != "eagle3"
        else Eagle3Spec(ttt_length=4, num_layers=1),
        train=TrainSpec(
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
        eval=EvalSpec(benchmarks=["humaneval", "mbpp"], temperature=0.0, max_new_tokens=64, limit=8),
    )


for _algo in ALGOS:
    _PRESETS.add(f"tiny-{_algo}", lambda a=_algo: _tiny(a))
    for _target in _PAPER_TARGETS:
        _PRESETS.add(f"{_algo}-{_target}", lambda a=_algo, t=_target: _paper(a, t))


def names() -> list[str]:
    return _PRESETS.names()


def get(name: str) -> RunSpec:
    return _PRESETS.get(name)()
