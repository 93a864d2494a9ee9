"""A fourth draft algorithm defined in this file alone plugs into every user path: its preset
exists, `deepspec train` trains and checkpoints it, `deepspec eval` reloads it from the checkpoint's
config.json and decodes losslessly, and the results carry its own protocol parameters.

The draft is deliberately small: a "feature bigram" that predicts x_{t+2} from the target's fused
features at t and the embedding of x_{t+1}, and drafts k tokens by feeding its own guesses back.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import pytest
import torch
from pydantic import Field
from torch import nn
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.decode.speculative import target_generate
from deepspec_core.drafts import DRAFTS, DraftBatch, DraftLoss, DraftModel, Proposal
from deepspec_core.drafts.base import block_metrics
from deepspec_core.eval.loading import eos_token_ids, load_draft
from deepspec_core.spec import save_spec
from deepspec_core.specbase import DraftSpecBase

pytestmark = pytest.mark.e2e


class BigramSpec(DraftSpecBase):
    algo: Literal["bigram"] = Field("bigram", description="Feature-conditioned bigram drafter (a test plug-in).")
    chain: int = Field(3, ge=1, description="Tokens drafted per round, and the most it drafts.")

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": dict(chain=3)}

    def default_k(self) -> int:
        return self.chain

    def max_k(self) -> int:
        return self.chain

    def draft_params(self) -> dict[str, int | float | str | bool]:
        return {"chain": self.chain}


class BigramDraft(DraftModel):
    algo = "bigram"
    spec_class = BigramSpec

    def __init__(self, draft_spec, target_spec, target_config, embed_weight, lm_head_weight):
        super().__init__(draft_spec, target_spec, target_config, embed_weight, lm_head_weight)
        h = self.hidden_size
        self.fc = nn.Linear(len(self.layer_ids) * h, h)
        self.mix = nn.Linear(2 * h, h)
        self._h: torch.Tensor | None = None  # fused features of the newest ingested token (B, H)

    def _logits(self, fused: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.vocab_logits(torch.tanh(self.mix(torch.cat([fused, emb], -1))))  # (…, V)

    def _fuse(self, aux: torch.Tensor) -> torch.Tensor:
        return self.fc(aux.flatten(-2).to(self.param_dtype))  # (…, K, H) → (…, H)

    def forward_train(self, batch: DraftBatch) -> DraftLoss:
        ids, lm = batch.input_ids, batch.loss_mask.bool()
        logits = self._logits(self._fuse(batch.aux_hidden[:, :-2]), self.embed(ids[:, 1:-1]))  # (B, T-2, V)
        labels, valid = ids[:, 2:], lm[:, 2:]
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none")
        loss = (ce * valid.flatten()).sum() / valid.sum().clamp_min(1)
        correct = (logits.argmax(-1) == labels).float()
        metrics = block_metrics(correct.reshape(-1, 1), correct.reshape(-1, 1), valid.reshape(-1, 1))
        return DraftLoss(loss, metrics)

    def start(self, input_ids: torch.Tensor, aux_hidden: torch.Tensor) -> None:
        self._h = self._fuse(aux_hidden[:, -1])

    def commit(self, tokens: torch.Tensor, aux_hidden: torch.Tensor) -> None:
        self._h = self._fuse(aux_hidden[:, -1])

    def propose(self, last_token, k, temperature=0.0, generator=None, policy=None) -> Proposal:
        tokens, probs, dists, confs = [], [], [], []
        prev = last_token
        for _ in range(k):
            tok, p, dist, conf = self.sample_tokens(self._logits(self._h, self.embed(prev)), temperature, generator)
            tokens.append(tok), probs.append(p), dists.append(dist), confs.append(conf)
            prev = tok
        return Proposal.from_steps(tokens, probs, dists, confs)


@pytest.fixture
def bigram():
    DRAFTS.add("bigram", BigramDraft)
    yield
    DRAFTS.remove("bigram")


def test_a_draft_defined_in_a_test_file_trains_checkpoints_reloads_and_decodes_losslessly(bigram, make_spec, tmp_path):
    spec = make_spec("bigram", "train.max_steps=4", "train.save_every=4", "train.val_every=4")
    assert spec.draft == BigramSpec(chain=3) and spec.num_draft_tokens() == 3  # its preset and its k
    path = tmp_path / "bigram.toml"
    save_spec(spec, path)
    cli = CliRunner()
    res = cli.invoke(app, ["train", str(path)])
    assert res.exit_code == 0, res.output
    step = spec.run_dir() / "step_4"
    config = json.loads((step / "config.json").read_text())
    assert config["architectures"] == ["BigramDraft"] and config["draft"] == {"algo": "bigram", **BigramSpec().model_dump(
        mode="json", exclude={"algo"}, exclude_none=True)}

    out = tmp_path / "eval"
    res = cli.invoke(app, ["eval", "--draft", str(spec.run_dir()), "--benchmarks", "mbpp", "--limit", "2",
                           "--data-dir", "packaged", "--max-new-tokens", "12", "--temperature", "0",
                           "--save-outputs", "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"]["algorithm"] == "bigram" and results["protocol"]["draft_params"] == {"chain": 3}
    loaded = load_draft(step)
    assert isinstance(loaded.draft, BigramDraft)
    eos = eos_token_ids(loaded.target.model, loaded.target.tokenizer)
    rows = [json.loads(line) for line in (out / "outputs" / "mbpp.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:  # greedy speculative decoding returns exactly the target's own greedy tokens
        want = target_generate(loaded.target.model, torch.tensor([row["prompt_ids"]]), 12, eos_token_ids=eos)
        assert row["generated_ids"] == want.tokens
        assert sum(row["accept_lengths"]) + 1 == len(row["generated_ids"])
