"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from deepspec_core.eval.metrics import EvalResults


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _title(r: EvalResults) -> str:
    p = r.protocol
    return f"{p.algorithm} · T={p.temperature:g} · k={p.num_draft_tokens} · thinking {'on' if p.thinking else 'off'}"


def plot_acceptance(results: EvalResults, path: Path | str) -> Path:
    """Conditional acceptance P(token j accepted | 1..j−1 accepted) per draft position, one line per
    benchmark; a position no round reached is left out (undefined, not 0)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in [*results.benchmarks.items(), ("macro", results.macro)]:
        xs = list(range(1, len(r.acceptance_conditional) + 1))
        ys = [float("nan") if a is None else a for a in r.acceptance_conditional]
        style = {"color": "black", "linewidth": 2.5} if name == "macro" else {"linewidth": 1.2, "alpha": 0.85}
        ax.plot(xs, ys, marker="o", markersize=3, label=name, **style)
    ax.set_xticks(range(1, results.protocol.num_draft_tokens + 1))
    ax.set_xlabel("draft position j")
    ax.set_ylabel("conditional acceptance")
    ax.set_ylim(0, 1.02)
    ax.set_title(_title(results), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_tau(results: EvalResults, path: Path | str) -> Path:
    """τ (accepted length, bonus included) per benchmark and the macro average."""
    plt = _pyplot()
    names = [*results.benchmarks, "macro"]
    taus = [r.tau for r in results.benchmarks.values()] + [results.macro.tau]
    taus = [float("nan") if t is None else t for t in taus]  # no rounds: no bar
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 2), 4.2))
    bars = ax.bar(names, taus, color=["#4c72b0"] * (len(names) - 1) + ["#333333"])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylim(0, results.protocol.num_draft_tokens + 1.2)
    ax.set_ylabel("τ (tokens per round)")
    ax.set_title(_title(results), fontsize=10)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return save_figure(fig, path)


def save_figure(fig, path: Path | str) -> Path:
    """Lay out, write as PNG (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
