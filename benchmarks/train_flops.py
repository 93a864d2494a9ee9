"""FLOPs of one training step (forward + backward) per algorithm, counted by torch's FlopCounterMode.

Shapes of the side-by-side measurement against DeepSpec's own step (docs/algorithms.md): a Qwen3
target with d = 256, V = 4096, features of 3 layers, one 512-token sequence, Eagle3 with TTT 7,
DFlash / DSpark with 64 anchors × block 7 and one draft layer (``--layers`` for more). Baseline, in
the same run: the same step with every vocabulary chunk recomputed in backward (``memory_budget``
0, what deepspec did before the budget existed); the ratio column is kept / recomputed FLOPs.

    python benchmarks/train_flops.py
    python benchmarks/train_flops.py --vocab 151936 --hidden 2560 --seq 1024
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen3Config

from deepspec_core.drafts import build_draft
from deepspec_core.drafts.base import DraftBatch
from deepspec_core.spec import algorithms, load_spec


def step_flops(algo: str, args: argparse.Namespace, budget: int) -> float:
    h = args.hidden
    cfg = Qwen3Config(vocab_size=args.vocab, hidden_size=h, intermediate_size=3 * h, num_hidden_layers=6,
                      num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 128), head_dim=64)
    knobs = {"eagle3": ["draft.ttt_length=7", "draft.num_layers=1"]}.get(
        algo, ["draft.block_size=7", f"draft.num_anchors={args.anchors}", f"draft.num_layers={args.layers}"])
    spec = load_spec(f"tiny-{algo}", ["target.layer_ids=[1,3,5]", "target.mask_token_id=5", *knobs])
    torch.manual_seed(0)
    embed = torch.randn(args.vocab, h) * 0.02
    draft = build_draft(spec, cfg, embed, embed)
    draft.loss_memory_budget = budget
    g = torch.Generator().manual_seed(0)
    t = args.seq
    batch = DraftBatch(torch.randint(0, args.vocab, (1, t), generator=g), torch.ones(1, t, dtype=torch.long),
                       torch.ones(1, t, dtype=torch.bool), torch.randn(1, t, 3, h, generator=g),
                       torch.randn(1, t, h, generator=g))
    with FlopCounterMode(display=False) as counter:
        draft.forward_train(batch).loss.backward()
    return counter.get_total_flops() / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", nargs="+", default=algorithms(), choices=algorithms())
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--anchors", type=int, default=64)
    p.add_argument("--layers", type=int, default=1, help="draft layers of the block drafters")
    p.add_argument("--budget-mb", type=int, default=1024, help="train.loss_memory_mb of the measured step")
    args = p.parse_args()
    print(f"{'algo':8} {'GFLOP/step':>11} {'recomputed':>11} {'ratio':>6}")
    for algo in args.algos:
        kept, recomputed = step_flops(algo, args, args.budget_mb << 20), step_flops(algo, args, 0)
        print(f"{algo:8} {kept:11.4g} {recomputed:11.4g} {kept / recomputed:6.2f}")


if __name__ == "__main__":
    main()
