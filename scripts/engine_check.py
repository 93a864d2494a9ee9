"""Load and run deepspec exports in the engines themselves (run with the engine venv's python:
scripts/engine_venv.sh).

    python scripts/engine_check.py generate REQUEST.json RESULT.json
    python scripts/engine_check.py load EXPORT_DIR RESULT.json
    python scripts/engine_check.py speculators EXPORT_DIR REFERENCE.pt RESULT.json

``generate``: REQUEST = {"target": DIR, "drafts": {name: EXPORT_DIR}, "prompts": [[token ids], ...],
"max_tokens": N}. Greedy decoding of every prompt target-only, then with each draft
(``LLM(model=EXPORT_DIR)``: the target comes from the export's config); RESULT holds the generated
ids, the seconds, and vLLM's own speculative-decoding counters (drafts, drafted and accepted tokens,
accepted per position) measured around the call.

``load``: for drafts whose vLLM runtime cannot start on a CPU (DSpark needs the GPU model runner):
build vLLM's engine config from the export, instantiate its draft class, run its ``load_weights``
on the exported tensors and report every parameter left unloaded and every tensor that did not
arrive intact (q/k/v and gate/up are stacked by vLLM).

``speculators``: ``SpeculatorModel.from_pretrained`` on the export, the target's embedding and
lm_head filled from the verifier (``load_verifier_weights``); RESULT lists every parameter still
unset (NaN) and every exported tensor the model does not hold as written. For block drafters,
REFERENCE (torch.save by the test: input_ids (1, T), aux (1, T, K, H), final_hidden (1, T, H),
anchors (1, N) and deepspec's teacher-forced logits (1, N, k, V)) is fed to speculators' own block
forward at the same anchors, and the largest logit difference is reported.

Standalone on purpose: the engine venv has the engines, not deepspec.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _counters(llm) -> dict:
    out = {}
    for m in llm.get_metrics():
        if m.name.startswith("vllm:spec_decode"):
            out[m.name.removeprefix("vllm:spec_decode_")] = list(m.values) if hasattr(m, "values") else m.value
    return out


def _run(model: str, prompts: list[list[int]], max_tokens: int) -> dict:
    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=model, dtype="float32", max_model_len=1024, max_num_seqs=4, seed=0, disable_log_stats=False,
              enforce_eager=True)
    start = time.perf_counter() - t0
    try:
        before = _counters(llm)
        t0 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                            SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
        seconds = time.perf_counter() - t0
        after = _counters(llm)
    finally:
        llm.llm_engine.engine_core.shutdown()  # else its engine and worker processes outlive this one
    delta = {k: [a - b for a, b in zip(v, before.get(k, [0] * len(v)), strict=True)] if isinstance(v, list) else v - before.get(k, 0)
             for k, v in after.items()}
    return {"outputs": [list(o.outputs[0].token_ids) for o in outs], "seconds": seconds, "startup_seconds": start,
            "counters": delta}


def generate(request_path: str, result_path: str) -> None:
    req = json.loads(open(request_path).read())
    result = {"target": _run(req["target"], req["prompts"], req["max_tokens"]), "drafts": {}}
    for name, export_dir in req["drafts"].items():
        result["drafts"][name] = _run(export_dir, req["prompts"], req["max_tokens"])
    with open(result_path, "w") as f:
        json.dump(result, f)


def load(export_dir: str, result_path: str) -> None:
    import torch
    from safetensors.torch import load_file

    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1"
    import vllm.config.vllm as vc
    from vllm.config import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.engine.arg_utils import EngineArgs

    def config_only(self):  # the V2 runner's Triton check concerns running, not building the config
        unsupported = self._get_v2_model_runner_unsupported_features()
        if unsupported:
            raise ValueError(f"Model Runner V2 does not support: {', '.join(unsupported)}")

    vc.VllmConfig._validate_v2_model_runner = config_only
    cfg = EngineArgs(model=export_dir, dtype="float32", max_model_len=512, enforce_eager=True).create_engine_config()
    spec = cfg.speculative_config
    with set_current_vllm_config(cfg):
        init_distributed_environment(world_size=1, rank=0, distributed_init_method="tcp://127.0.0.1:29533",
                                     local_rank=0, backend="gloo")
        initialize_model_parallel(1, 1)
    from dataclasses import replace

    from vllm.model_executor.model_loader.utils import get_model_architecture

    draft_cfg = replace(cfg, attention_config=replace(cfg.attention_config, use_non_causal=True))
    model_cls, _ = get_model_architecture(spec.draft_model_config)
    with set_current_vllm_config(draft_cfg):
        model = model_cls(vllm_config=draft_cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan")) if p.dtype.is_floating_point else p.fill_(-1)
    tensors = load_file(os.path.join(export_dir, "model.safetensors"))
    with set_current_vllm_config(draft_cfg):
        model.load_weights(iter(tensors.items()))
    params = dict(model.named_parameters())
    state = {**params, **dict(model.named_buffers())}
    unloaded = sorted(n for n, p in params.items()
                      if (p.isnan().any().item() if p.dtype.is_floating_point else (p == -1).all().item()))
    broken = []
    for name, t in tensors.items():
        if name == "t2d":  # vLLM derives it from d2t and drops it (speculators reads it)
            continue
        parts = name.split(".")
        if parts[0] == "layers" and parts[3] in ("q_proj", "k_proj", "v_proj"):
            attn = model.model.layers[int(parts[1])].self_attn
            q, kv, w = attn.q_size, attn.kv_size, attn.qkv_proj.weight
            got = {"q_proj": w[:q], "k_proj": w[q:q + kv], "v_proj": w[q + kv:]}[parts[3]]
        elif parts[0] == "layers" and parts[3] in ("gate_proj", "up_proj"):
            w = model.model.layers[int(parts[1])].mlp.gate_up_proj.weight
            got = w[: w.shape[0] // 2] if parts[3] == "gate_proj" else w[w.shape[0] // 2:]
        elif name == "d2t":
            got = next((v for k, v in state.items() if k.endswith("draft_id_to_target_id")), None)
        else:
            got = state.get(name if name.startswith("lm_head") else "model." + name)
        if got is None or not torch.equal(got.data.to(t.dtype), t):
            broken.append(name)
    result = {"method": spec.method, "num_speculative_tokens": spec.num_speculative_tokens,
              "architecture": model_cls.__name__, "parameters": sorted(params), "unloaded": unloaded,
              "not_intact": broken}
    with open(result_path, "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    os._exit(0)  # nothing was started that needs shutting down; skip vLLM's slow teardown


def speculators(export_dir: str, reference_path: str, result_path: str) -> None:
    import torch
    from safetensors.torch import load_file
    from speculators import SpeculatorModel, SpeculatorModelConfig

    cfg = SpeculatorModelConfig.from_pretrained(export_dir)
    cfg.transformer_layer_config._attn_implementation = "eager"  # its default is flex attention (GPU)
    # fp32 like deepspec's reference (bf16 → fp32 is exact; buffers such as rope's are built in fp32)
    model = SpeculatorModel.from_pretrained(export_dir, config=cfg, torch_dtype=torch.float32)
    model.load_verifier_weights()
    model.eval()
    state = model.state_dict()
    written = load_file(os.path.join(export_dir, "model.safetensors"))
    result = {"class": type(model).__name__,
              "unset": sorted(n for n, t in state.items() if t.dtype.is_floating_point and t.isnan().any()),
              "not_as_written": sorted(n for n, t in written.items()
                                       if n not in state or not torch.equal(state[n].to(t.dtype), t))}
    ref = torch.load(reference_path)
    if "logits" in ref and hasattr(model, "_backbone_forward"):
        import speculators.models.dflash.core as core

        anchors = ref["anchors"][0]
        n = anchors.numel()
        core.select_anchors = lambda *_a, **_k: (anchors.clone(), torch.ones(n, dtype=torch.bool))  # fixed anchors
        ids = ref["input_ids"]
        with torch.no_grad():
            hidden, logits, _, _, index = model._backbone_forward(
                ref["aux"].flatten(-2).float(), ids, torch.ones_like(ids), ref["final_hidden"].float(),
                torch.zeros_like(ids), max_anchors=n)
            b = model.block_size
            logits = logits.view(n, b, -1).float()
            head = getattr(model, "markov_head", None)
            if head is not None:
                tokens = ids[0, index].view(n, b)
                prev = tokens if model.config.sample_from_anchor else torch.cat([tokens[:, :1], tokens[:, :-1]], 1)
                emb = head.prev_embeddings(prev)
                logits = logits + head.block_bias(prev_token_ids=prev, hidden_states=hidden.view(n, b, -1), prev_emb=emb)
        ours = ref["logits"][0].float()  # (N, k, V): slot j predicts x_{a+1+j}
        theirs = logits if model.config.sample_from_anchor else logits[:, 1:]  # the original layout's anchor predicts nothing
        k = min(ours.shape[1], theirs.shape[1])
        result["block_logits_max_diff"] = (ours[:, :k] - theirs[:, :k]).abs().max().item()
        result["argmax_agreement"] = (ours[:, :k].argmax(-1) == theirs[:, :k].argmax(-1)).float().mean().item()
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    {"generate": generate, "load": load, "speculators": speculators}[sys.argv[1]](*sys.argv[2:])
