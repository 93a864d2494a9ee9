"""Measure every cache codec against raw bf16 on real target features.

Feature sets:
  * ``tiny``   the embedded tiny target (trained Qwen3, H=256 default / 128 quick), layers [0, 1, 2],
               on held-out docstring→function chats rendered with its chat template;
  * ``h2560``  a RANDOMLY INITIALISED 2-layer Qwen3 with Qwen3-4B's hidden size (2560), layers
               [0, 1], on random token ids. Its activations have no trained outliers: use it for
               byte statistics and speed at the real width, not for accuracy.

Per codec: bytes/token at the measured K and projected to Qwen3-4B (K=5, H=2560), ratio vs raw
bf16 (the reference layout, 4+2+2·H·(K+1) bytes/token), encode and decode MB/s of bf16 input on
one core (torch.set_num_threads(1)), decode tokens/s, relative L2 error of aux and final, and
for the final hidden state the total variation between softmax(lm_head(h)) before and after
(and the top-1 flip rate).

What a codec costs in accepted length needs training, so it is measured separately by
``recipe_ablations.py --what codec`` (docs/cache.md): fp8-zstd against bf16-zstd gave Δτ +0.2% on
the tiny target (DSpark, 2 seeds; 1,003 vs 1,429 bytes/token) and −2.1% on SmolLM2-135M (DSpark,
1 seed; 3,296 vs 4,990 bytes/token), which is why bf16-zstd is the default.

    python benchmarks/cache_codecs.py [--tiny quick|default] [--tokens 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from deepspec_core.cache import format as fmt
from deepspec_core.cache.codecs import CODECS, get_codec
from deepspec_core.cache.online import compute_features
from deepspec_core.targets.hf import get_lm_head

QWEN3_4B = (2560, 5)


def tiny_features(size: str, tokens: int) -> tuple[list[dict], torch.nn.Module, list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deepspec_core.data.tokenize import tokenize_conversation
    from deepspec_core.targets import tiny_data as td
    from deepspec_core.targets.tiny import ensure_tiny_target

    path = ensure_tiny_target(size, progress=False)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    root = td.stdlib_root()
    files = [p for p in td.stdlib_files(root) if td.is_heldout(p.relative_to(root).as_posix())]
    samples, n = [], 0
    for src in td.read_sources(files, root):
        for conv in td.chat_pairs(src):
            s = tokenize_conversation(tok, conv, max_length=512, thinking=False)
            samples.append({"input_ids": torch.tensor(s.input_ids), "loss_mask": torch.tensor(s.loss_mask).bool()})
            n += len(s.input_ids)
            if n >= tokens:
                return _run(model, samples, [0, 1, 2]), model, [0, 1, 2]
    return _run(model, samples, [0, 1, 2]), model, [0, 1, 2]


def random_h2560_features(tokens: int) -> tuple[list[dict], torch.nn.Module, list[int]]:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=8192, hidden_size=2560, intermediate_size=4096, num_hidden_layers=2, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
    )
    model = Qwen3ForCausalLM(cfg).eval()
    seq = 512
    samples = [{"input_ids": torch.randint(0, 8192, (seq,)), "loss_mask": torch.ones(seq, dtype=torch.bool)}
               for _ in range(max(1, tokens // seq))]
    return _run(model, samples, [0, 1]), model, [0, 1]


def _run(model, samples, layer_ids, batch: int = 4) -> list[dict]:
    out = []
    for i in range(0, len(samples), batch):
        out += compute_features(model, samples[i : i + batch], layer_ids)
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@torch.no_grad()
def measure(feats: list[dict], model: torch.nn.Module, layer_ids: list[int]) -> list[dict]:
    lm_head = get_lm_head(model)
    k, h = len(layer_ids), feats[0]["final_hidden"].shape[-1]
    tokens = sum(f["input_ids"].shape[0] for f in feats)
    raw_in = sum(2 * (f["aux_hidden"].numel() + f["final_hidden"].numel()) for f in feats)
    ref_p = [torch.softmax(lm_head(f["final_hidden"].float()), -1) for f in feats]
    rows = []
    for name in CODECS.names():
        codec = get_codec(name)
        t0 = time.perf_counter()
        blobs = [codec.encode_features(f["aux_hidden"], f["final_hidden"]) for f in feats]
        t1 = time.perf_counter()
        dec = [codec.decode_features(a, b, f["input_ids"].shape[0], k, h) for (a, b), f in zip(blobs, feats, strict=True)]
        t2 = time.perf_counter()
        aux_bytes = sum(len(a) for a, _ in blobs)
        final_bytes = sum(len(b) for _, b in blobs)
        aux_bpv = aux_bytes / sum(f["aux_hidden"].numel() for f in feats)
        final_bpv = final_bytes / sum(f["final_hidden"].numel() for f in feats)
        per_tok = fmt.TOKEN_BYTES + fmt.RECORD_HEADER.size * len(feats) / tokens + (aux_bytes + final_bytes) / tokens
        tv, flips = [], []
        for (_, fin), p in zip(dec, ref_p, strict=True):
            q = torch.softmax(lm_head(fin.float()), -1)
            tv.append(0.5 * (p - q).abs().sum(-1))
            flips.append((p.argmax(-1) != q.argmax(-1)).float())
        big_h, big_k = QWEN3_4B
        proj = fmt.TOKEN_BYTES + big_h * (big_k * aux_bpv + final_bpv)
        rows.append({
            "codec": name,
            "aux_bytes_per_value": aux_bpv,
            "final_bytes_per_value": final_bpv,
            "bytes_per_token": per_tok,
            "ratio_vs_raw_bf16": fmt.raw_bf16_bytes_per_token(h, k) / per_tok,
            "qwen3_4b_bytes_per_token": proj,
            "qwen3_4b_ratio": fmt.raw_bf16_bytes_per_token(big_h, big_k) / proj,
            "encode_MBps": raw_in / 1e6 / (t1 - t0),
            "decode_MBps": raw_in / 1e6 / (t2 - t1),
            "decode_tokens_per_s": tokens / (t2 - t1),
            "rel_l2_aux": sum(_rel(a, f["aux_hidden"]) for (a, _), f in zip(dec, feats, strict=True)) / len(feats),
            "rel_l2_final": sum(_rel(b, f["final_hidden"]) for (_, b), f in zip(dec, feats, strict=True)) / len(feats),
            "tv_final": float(torch.cat(tv).mean()),
            "top1_flips": float(torch.cat(flips).mean()),
        })
    return rows


def table(title: str, rows: list[dict], tokens: int, k: int, h: int) -> str:
    lines = [
        f"**{title}** — {tokens:,} tokens, K={k}, H={h}",
        "",
        "| codec | bytes/token | × vs raw bf16 | Qwen3-4B proj. bytes/token (×) | aux B/value | final B/value "
        "| enc MB/s | dec MB/s | dec tokens/s | rel L2 aux | rel L2 final | TV final | top-1 flips |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['codec']} | {r['bytes_per_token']:,.0f} | {r['ratio_vs_raw_bf16']:.2f} | "
            f"{r['qwen3_4b_bytes_per_token']:,.0f} ({r['qwen3_4b_ratio']:.2f}×) | {r['aux_bytes_per_value']:.3f} | "
            f"{r['final_bytes_per_value']:.3f} | {r['encode_MBps']:,.0f} | {r['decode_MBps']:,.0f} | "
            f"{r['decode_tokens_per_s']:,.0f} | {r['rel_l2_aux']:.4f} | {r['rel_l2_final']:.4f} | "
            f"{r['tv_final']:.5f} | {r['top1_flips']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", default="quick", choices=["quick", "default"], help="tiny target build")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per feature set")
    ap.add_argument("--skip-h2560", action="store_true", help="only the tiny target")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    results = {}
    threads = torch.get_num_threads()
    sets = [("tiny", f"tiny target ({args.tiny}), real features", lambda: tiny_features(args.tiny, args.tokens))]
    if not args.skip_h2560:
        sets.append(("h2560", "random-init 2-layer Qwen3, H=2560 (byte statistics only)",
                     lambda: random_h2560_features(args.tokens)))
    for key, title, make in sets:
        torch.set_num_threads(threads)
        feats, model, layer_ids = make()
        torch.set_num_threads(1)  # codec timings are per core
        rows = measure(feats, model, layer_ids)
        tokens = sum(f["input_ids"].shape[0] for f in feats)
        print(table(title, rows, tokens, len(layer_ids), feats[0]["final_hidden"].shape[-1]), "\n", flush=True)
        results[key] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
