"""The ``local`` regen backend: in-process generation with transformers, conversations batched turn
by turn (the ``openai`` backend, in ``openai_client.py``, drives the same conversations over HTTP).

Each row samples with its own generator, seeded per (run seed, conversation id, turn), so an
answer does not depend on the batch it shares; a prompt that cannot fit the target's context with
``max_tokens`` new tokens fails into the errors file instead of generating past the window.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deepspec_core.data.backend import (
    Outcome,
    Sampling,
    TurnResult,
    context_problem,
    conversation_turns,
    turn_seed,
)
from deepspec_core.data.tokenize import render_prompt, split_thinking


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids) if isinstance(ids, (list, tuple)) else ({ids} if ids is not None else set())
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _row_sampler(sampling: Sampling, seeds: list[int], device: Any) -> Any:
    """A logits processor that samples each row with its own generator and leaves only that token
    finite, so ``generate``'s greedy step picks it: a row's answer depends on its seed alone, not on
    the batch it shares (transformers' own sampling draws all rows from one global generator)."""
    import torch
    from transformers import (
        LogitsProcessor,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    # transformers' warpers, in the order its sampling applies them
    warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(sampling.temperature)]
    if sampling.top_k:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    if sampling.min_p:
        warpers.append(MinPLogitsWarper(sampling.min_p))
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            for w in warpers:
                scores = w(input_ids, scores)
            probs = torch.softmax(scores.float(), dim=-1)  # (B, V)
            picked = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens, strict=True)])
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, picked[:, None], 0.0)

    return RowSampler()


def generate_answers(
    model: Any,
    tokenizer: Any,
    histories: list[list[dict[str, Any]]],
    sampling: Sampling,
    thinking: bool,
    seeds: list[int] | None = None,
) -> list[TurnResult]:
    """One batched ``generate`` over several chats (left padding); one answer per chat, row i
    sampled with ``seeds[i]`` (default: ``sampling.seed`` + i)."""
    import torch
    from transformers import LogitsProcessorList

    texts = [render_prompt(tokenizer, h, thinking) for h in histories]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": tokenizer.pad_token_id}
    # Greedy decoding over logits the row sampler has already sampled from (see _row_sampler).
    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if sampling.temperature > 0:
        seeds = seeds or [sampling.seed + i for i in range(len(histories))]
        kwargs["logits_processor"] = LogitsProcessorList([_row_sampler(sampling, seeds, model.device)])
    eos = _eos_ids(model, tokenizer)
    with torch.no_grad():
        out = model.generate(**enc, eos_token_id=sorted(eos), **kwargs)  # (B, T_prompt + T_new)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    results = []
    for row in new:
        stop = next((j for j, t in enumerate(row) if t in eos), None)
        used = row[: stop + 1] if stop is not None else row
        text = tokenizer.decode(used, skip_special_tokens=True)
        content, think = split_thinking(text) if thinking else (text.strip(), None)
        results.append(TurnResult(content, think, "stop" if stop is not None else "length", len(used)))
    return results


class LocalBackend:
    """In-process generation with transformers; conversations are batched turn by turn."""

    name = "local"

    def __init__(self, net: Any, tokenizer: Any, model_name: str, batch_size: int = 16):
        self.net, self.tokenizer, self.model_name, self.batch_size = net, tokenizer, model_name, batch_size

    def run(self, jobs: Iterator[tuple[int, dict[str, Any]]], sampling: Sampling, thinking: bool) -> Iterator[tuple[int, Outcome]]:
        batch: list[tuple[int, dict[str, Any]]] = []
        for job in jobs:
            batch.append(job)
            if len(batch) == self.batch_size:
                yield from self._run_batch(batch, sampling, thinking)
                batch = []
        if batch:
            yield from self._run_batch(batch, sampling, thinking)

    def _run_batch(self, batch: list[tuple[int, dict[str, Any]]], sampling: Sampling, thinking: bool) -> Iterator[tuple[int, Outcome]]:
        gens = {seq: conversation_turns(conv, self.name, self.model_name, sampling, thinking) for seq, conv in batch}
        ids = {seq: conv["id"] for seq, conv in batch}
        prompts = {seq: next(g) for seq, g in gens.items()}
        done: dict[int, Outcome] = {}
        from deepspec_core.targets.hf import text_config

        context = getattr(text_config(self.net.config), "max_position_embeddings", None)
        turn = 0
        while prompts:
            for s in list(prompts):  # generating past the window would write garbage as an answer
                n = len(self.tokenizer(render_prompt(self.tokenizer, prompts[s], thinking), add_special_tokens=False)["input_ids"])
                problem = context_problem(n, sampling.max_tokens, context)
                if problem:
                    done[s] = Outcome(error=problem)
                    del prompts[s]
            if not prompts:
                break
            seqs = list(prompts)
            seeds = [turn_seed(sampling.seed, ids[s], turn) for s in seqs]
            try:
                answers = generate_answers(
                    self.net, self.tokenizer, [prompts[s] for s in seqs], sampling, thinking, seeds
                )
            except (RuntimeError, ValueError) as err:  # e.g. out of memory, prompt longer than the model allows
                for s in seqs:
                    done[s] = Outcome(error=f"{type(err).__name__}: {err}")
                break
            for s, answer in zip(seqs, answers, strict=True):
                try:
                    prompts[s] = gens[s].send(answer)
                except StopIteration as stop:
                    done[s] = stop.value
                    del prompts[s]
            turn += 1
        for seq, _ in batch:
            yield seq, done[seq]
