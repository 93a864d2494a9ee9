"""DSpark's light heads on top of the block backbone: sequential (Markov / RNN) and confidence.

A sequential head turns the block's parallel predictions into a left-to-right chain: slot k's
logits get a bias that depends on the token x_{k−1} before it (x_0 = the anchor), so the slots
stop being conditionally independent. In training x_{k−1} is the data token (teacher forcing,
all slots at once); at decode time it is the token just drafted.

Both heads expose the same interface:
- ``features(prev, hidden)`` (…, γ) ids, (…, γ, H) → per-slot features e (…, γ, r), teacher-forced;
- ``step(prev, hidden, state)`` one slot at decode time → (e (B, r), new state);
- ``bias(e)`` → logit bias (…, V) = W2 · e;
- ``token_embedding(prev)`` → W1[prev] (…, r), also an input of the confidence head.
W2 starts at zero so a fresh DSpark predicts exactly what its backbone does.
"""

from __future__ import annotations

import torch
from torch import nn


class MarkovHead(nn.Module):
    """logits_k = U_k + W2 · W1[x_{k−1}] with W1: V × r lookup and W2: r × V (rank r)."""

    def __init__(self, vocab_size: int, rank: int, out_size: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, rank)  # W1
        self.proj = nn.Linear(rank, out_size or vocab_size, bias=False)  # W2
        nn.init.normal_(self.embed.weight, std=rank**-0.5)
        nn.init.zeros_(self.proj.weight)

    def token_embedding(self, prev: torch.Tensor) -> torch.Tensor:
        return self.embed(prev)

    def features(self, prev: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.embed(prev)

    def step(self, prev: torch.Tensor, hidden: torch.Tensor, state=None):
        return self.embed(prev), state

    def bias(self, e: torch.Tensor) -> torch.Tensor:
        return self.proj(e.to(self.proj.weight.dtype))


class RNNHead(nn.Module):
    """Gated recurrence over the block: z_k = [s_{k−1}; W1[x_{k−1}]; h_k] → (g, c, o) by one linear map;
    s_k = σ(g)⊙s_{k−1} + (1−σ(g))⊙tanh(c); bias_k = W2 · tanh(o). s_0 = 0."""

    def __init__(self, vocab_size: int, rank: int, hidden_size: int, out_size: int | None = None):
        super().__init__()
        self.rank = rank
        self.embed = nn.Embedding(vocab_size, rank)
        self.cell = nn.Linear(2 * rank + hidden_size, 3 * rank)
        self.proj = nn.Linear(rank, out_size or vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=rank**-0.5)
        nn.init.zeros_(self.proj.weight)

    def token_embedding(self, prev: torch.Tensor) -> torch.Tensor:
        return self.embed(prev)

    def step(self, prev: torch.Tensor, hidden: torch.Tensor, state: torch.Tensor | None = None):
        """prev (…,) ids, hidden (…, H), state (…, r) or None → (e (…, r), new state)."""
        x = self.embed(prev)
        s = x.new_zeros(x.shape) if state is None else state
        g, c, o = self.cell(torch.cat([s, x, hidden.to(x.dtype)], dim=-1)).chunk(3, dim=-1)
        gate = torch.sigmoid(g)
        return torch.tanh(o), gate * s + (1 - gate) * torch.tanh(c)

    def features(self, prev: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        out, state = [], None
        for k in range(prev.shape[-1]):
            e, state = self.step(prev[..., k], hidden[..., k, :], state)
            out.append(e)
        return torch.stack(out, dim=-2)

    def bias(self, e: torch.Tensor) -> torch.Tensor:
        return self.proj(e.to(self.proj.weight.dtype))


class ConfidenceHead(nn.Module):
    """c_k = σ(wᵀ[h_k; W1[x_{k−1}]]): the predicted probability that slot k's token is accepted.
    Without a sequential head the input is h_k alone. Returns logits; σ is applied by the caller."""

    def __init__(self, in_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, 1)

    def forward(self, hidden: torch.Tensor, token_emb: torch.Tensor | None = None) -> torch.Tensor:
        x = hidden if token_emb is None else torch.cat([hidden, token_emb.to(hidden.dtype)], dim=-1)
        return self.proj(x.to(self.proj.weight.dtype)).squeeze(-1).float()


def build_sequential_head(kind: str, vocab_size: int, rank: int, hidden_size: int,
                          out_size: int | None = None) -> nn.Module | None:
    """The spec's sequential head, or None for kind 'none' or rank 0. The token lookup W1 spans the
    target vocabulary (any token can precede a slot); the bias W2 spans ``out_size`` (the draft
    vocabulary, default: the target's)."""
    if kind == "none" or rank == 0:
        return None
    if kind == "markov":
        return MarkovHead(vocab_size, rank, out_size)
    if kind == "rnn":
        return RNNHead(vocab_size, rank, hidden_size, out_size)
    raise ValueError(f"unknown sequential head {kind!r}; choose markov, rnn or none")
