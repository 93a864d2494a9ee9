"""Bootstrap confidence intervals of τ over prompts: how much of a τ, or of a difference between two
drafts, is the luck of which prompts were decoded.

τ of a benchmark is a ratio of sums over its prompts (committed tokens / rounds), so a prompt with
many rounds weighs more; the resampling unit is the prompt (its rounds are not independent). Each
of ``resamples`` draws picks the benchmark's prompts with replacement and recomputes the ratio; the
interval is the percentile one (Efron & Tibshirani 1993, §13.3). The macro τ resamples every
benchmark independently and averages. A difference between two drafts evaluated on the same
prompts is *paired*: one draw of prompt indices serves both drafts, which removes the prompts' own
difficulty from the interval. A difference is resolved when its interval excludes 0.

Inputs are per-prompt ``(committed tokens, rounds)`` rows, as ``BenchmarkResult.prompt_rounds``
stores them. Deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95

PromptRounds = Sequence[Sequence[int]]  # (P, 2): committed tokens, rounds per prompt


def _draws(n_prompts: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_prompts, size=(resamples, n_prompts))  # (R, P)


def _taus(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """τ of each resample: rows (P, 2), idx (R, P) → (R,); NaN where a resample has no round."""
    committed, rounds = rows[idx, 0].sum(1), rows[idx, 1].sum(1)  # (R,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rounds > 0, committed / np.maximum(rounds, 1), np.nan)


def _interval(values: np.ndarray, level: float) -> tuple[float, float] | None:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _check(benches: Sequence[PromptRounds]) -> list[np.ndarray]:
    out = []
    for rows in benches:
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        if (a < 0).any():
            raise ValueError("prompt rounds must be non-negative (committed tokens, rounds)")
        out.append(a)
    return out


def macro_tau_interval(
    benches: Sequence[PromptRounds], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float] | None:
    """Interval of the equal-weight mean τ over benchmarks (one benchmark: its own τ's interval).

    A benchmark without prompts or rounds is left out, as in the macro average. None when none has a round."""
    rng = np.random.default_rng(seed)
    per = []
    for a in _check(benches):
        if a.shape[0] == 0 or a[:, 1].sum() == 0:
            continue
        per.append(_taus(a, _draws(a.shape[0], resamples, rng)))
    if not per:
        return None
    return _interval(np.nanmean(np.stack(per), axis=0), level)


def tau_interval(rows: PromptRounds, resamples: int = RESAMPLES, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float] | None:
    """Interval of one benchmark's τ from its prompts' (committed, rounds); None without rounds."""
    return macro_tau_interval([rows], resamples, level, seed)


def paired_difference_interval(
    a: Sequence[PromptRounds], b: Sequence[PromptRounds], resamples: int = RESAMPLES, level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Interval of macro τ(a) − macro τ(b) over the same benchmarks' same prompts, resampled in pairs.

    ``a`` and ``b`` list each benchmark's per-prompt rows in the same prompt order. Raises
    ValueError when a benchmark's prompt counts differ (not the same prompts)."""
    xa, xb = _check(a), _check(b)
    if len(xa) != len(xb) or any(p.shape[0] != q.shape[0] for p, q in zip(xa, xb, strict=True)):
        raise ValueError("a paired difference needs the same benchmarks with the same prompts on both sides")
    rng = np.random.default_rng(seed)
    diffs = []
    for p, q in zip(xa, xb, strict=True):
        if p.shape[0] == 0 or p[:, 1].sum() == 0 or q[:, 1].sum() == 0:
            continue
        idx = _draws(p.shape[0], resamples, rng)
        diffs.append(_taus(p, idx) - _taus(q, idx))
    if not diffs:
        return None
    return _interval(np.nanmean(np.stack(diffs), axis=0), level)
