"""Test doubles of the draft protocol whose proposal distribution q is known exactly.

``MixtureDraft`` drafts from q = α·p_target + (1 − α)·r, where p_target is the target's own
next-token distribution at the draft's context and r a fixed distribution: acceptance is high
(α near 1) or low (α near 0) at will, and a broken verification rule shows.
"""

from __future__ import annotations

import torch

from deepspec_core.drafts import Proposal


class MixtureDraft:
    algo = "mixture"

    def __init__(self, target, alpha: float, noise: torch.Tensor, layer_ids=(0,), seed: int = 0):
        self.target, self.alpha, self.noise = target, alpha, noise  # noise (V,) sums to 1
        self.layer_ids = list(layer_ids)
        self.corrupt = torch.Generator().manual_seed(seed)  # greedy corruption: not the decoding RNG
        self.ids: torch.Tensor | None = None

    def max_proposal(self):
        return None

    def start(self, input_ids, aux_hidden):
        assert aux_hidden.shape[:2] == input_ids.shape
        self.ids = input_ids.clone()

    def commit(self, tokens, aux_hidden):
        assert aux_hidden.shape[:2] == tokens.shape
        self.ids = torch.cat([self.ids, tokens], dim=1)

    @torch.no_grad()
    def propose(self, last_token, k, temperature=0.0, generator=None):
        ctx = torch.cat([self.ids, last_token.view(1, 1)], dim=1)
        toks, probs, dists = [], [], []
        for _ in range(k):
            logits = self.target(ctx).logits[:, -1].float()  # (1, V)
            if temperature <= 0:
                tok = logits.argmax(-1)
                if torch.rand((), generator=self.corrupt) > self.alpha:
                    tok = torch.multinomial(self.noise, 1, generator=self.corrupt)
                toks.append(tok.view(1))
                probs.append(torch.ones(1))
            else:
                q = (
                    self.alpha * torch.softmax(logits / temperature, -1) + (1 - self.alpha) * self.noise
                )  # (1, V)
                tok = torch.multinomial(q, 1, generator=generator).view(1)
                toks.append(tok)
                probs.append(q[0, tok])
                dists.append(q)
            ctx = torch.cat([ctx, toks[-1].view(1, 1)], dim=1)
        return Proposal(
            tokens=torch.stack(toks, 1),
            probs=torch.stack(probs, 1).float(),
            dists=torch.stack(dists, 1) if dists else None,
        )


class FixedDraft:
    algo = "fixed"

    """Drafts every token from one fixed distribution r (V,): free to run, q known exactly."""

    def __init__(self, r: torch.Tensor, layer_ids=(0,)):
        self.r, self.layer_ids = r, list(layer_ids)

    def max_proposal(self):
        return None

    def start(self, input_ids, aux_hidden):
        pass

    def commit(self, tokens, aux_hidden):
        pass

    def propose(self, last_token, k, temperature=1.0, generator=None):
        tokens = torch.multinomial(self.r, k, replacement=True, generator=generator).view(1, k)
        dists = self.r.expand(1, k, -1)
        return Proposal(tokens=tokens, probs=self.r[tokens].float(), dists=dists)


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson chi-square goodness of fit of ``counts`` (V,) to ``probs`` (V,); cells expected below
    ``min_expected`` are pooled into one so the asymptotic distribution holds. A token observed
    where the expected probability is exactly 0 gives p = 0."""
    counts, probs = counts.double(), probs.double()
    if (counts[probs == 0] > 0).any():
        return 0.0
    expected = probs * counts.sum()
    small = expected < min_expected
    obs = torch.cat([counts[~small], counts[small].sum().view(1)])
    exp = torch.cat([expected[~small], expected[small].sum().view(1)])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = ((obs - exp) ** 2 / exp).sum()
    df = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))
