"""How well a draft's per-slot confidences predict acceptance, before and after STS.

For each draft position j, over the rounds that judged j (:mod:`deepspec_core.decode.rounds`):
the prediction is the cumulative product a_j = Π_{i≤j} c_i of the round's confidences (raw, or
scaled by the STS temperatures), the label whether at least j drafted tokens were accepted. Reported
as docs/algorithms.md (Calibration) describes: the reference evaluation's 20-bin ECE, AUC and Brier
score, plus the 15-bin ECE that STS minimises.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from deepspec_core.decode.rounds import RoundOutcome
from deepspec_core.decode.schedule import apply_sts, ece
from deepspec_core.errors import DataError
from deepspec_core.eval.metrics import Calibration
from deepspec_core.progress import Progress, as_progress


def auc(pred: torch.Tensor, label: torch.Tensor) -> float | None:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties); None with one class."""
    pos, n = int(label.sum()), label.numel()
    if pos in (0, n):
        return None
    order = torch.argsort(pred.double(), stable=True)
    ranks = torch.empty(n, dtype=torch.float64)
    sorted_pred = pred.double()[order]
    i = 0
    while i < n:  # average ranks over ties
        j = i
        while j + 1 < n and sorted_pred[j + 1] == sorted_pred[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[label.bool()].sum() - pos * (pos + 1) / 2
    return float(u / (pos * (n - pos)))


def _per_position(preds: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {"ece15": [], "ece20": [], "auc": [], "brier": []}
    for p, y in zip(preds, labels, strict=True):
        empty = p.numel() == 0
        out["ece15"].append(None if empty else ece(p, y, 15))
        out["ece20"].append(None if empty else ece(p, y, 20))
        out["auc"].append(None if empty else auc(p, y))
        out["brier"].append(None if empty else float(((p - y) ** 2).mean()))
    return out


def calibration_report(
    rounds: Sequence[tuple[list[float], RoundOutcome]], k: int, temperatures: Sequence[float] | None
) -> Calibration:
    """Per-position calibration of the cumulative confidence over (confidences, outcome) rounds."""
    raw: list[list[float]] = [[] for _ in range(k)]
    sts: list[list[float]] = [[] for _ in range(k)]
    labels: list[list[float]] = [[] for _ in range(k)]
    for conf, o in rounds:
        n = min(o.judged, len(conf), k)
        if n == 0:
            continue
        c = torch.tensor(conf[:n], dtype=torch.float64)[None]
        a_raw = torch.cumprod(c, 1)[0]
        a_sts = torch.cumprod(apply_sts(c, temperatures[:n]), 1)[0] if temperatures else None
        for j in range(n):
            raw[j].append(float(a_raw[j]))
            labels[j].append(float(o.accepted > j))
            if a_sts is not None:
                sts[j].append(float(a_sts[j]))
    y = [torch.tensor(v, dtype=torch.float64) for v in labels]
    r = _per_position([torch.tensor(v, dtype=torch.float64) for v in raw], y)
    s = _per_position([torch.tensor(v, dtype=torch.float64) for v in sts], y) if temperatures else None
    return Calibration(
        sts_temperatures=list(temperatures) if temperatures else None,
        rounds=[len(v) for v in labels],
        ece15_raw=r["ece15"], ece20_raw=r["ece20"], auc_raw=r["auc"], brier_raw=r["brier"],
        ece15_sts=None if s is None else s["ece15"], ece20_sts=None if s is None else s["ece20"],
        auc_sts=None if s is None else s["auc"], brier_sts=None if s is None else s["brier"],
    )


def plot_reliability(
    rounds: Sequence[tuple[list[float], RoundOutcome]], k: int, temperatures: Sequence[float] | None,
    path: Path | str, title: str, bins: int = 15,
) -> Path:
    """Reliability diagram: observed survival vs predicted a_j in equal-width bins, one line per
    position, raw and (when fitted) after STS."""
    from deepspec_core.eval.plots import _pyplot, save_figure

    plt = _pyplot()
    panels = [("raw", None)] + ([("after STS", temperatures)] if temperatures else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (label, temps) in zip(axes[0], panels, strict=True):
        for j in range(k):
            pred, obs = [], []
            for conf, o in rounds:
                n = min(o.judged, len(conf), k)
                if n <= j:
                    continue
                c = torch.tensor(conf[:n], dtype=torch.float64)[None]
                c = apply_sts(c, temps[:n]) if temps else c
                pred.append(float(torch.cumprod(c, 1)[0, j]))
                obs.append(float(o.accepted > j))
            if not pred:
                continue
            p, y = torch.tensor(pred), torch.tensor(obs)
            idx = (p * bins).long().clamp(0, bins - 1)
            xs, ys = [], []
            for b in range(bins):
                sel = idx == b
                if sel.any():
                    xs.append(float(p[sel].mean()))
                    ys.append(float(y[sel].mean()))
            ax.plot(xs, ys, marker="o", markersize=3, label=f"j={j + 1}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("predicted P(≥ j accepted) = Π c_i")
        ax.set_ylabel("observed fraction")
        ax.set_title(f"{label} · {title}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no line when no round judged a position
            ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def heldout_prompts(spec: Any, data: str | Path | None, limit: int) -> tuple[list[list[dict[str, str]]], str]:
    """Prompts (messages before the first answer) for calibration: ``data`` (a conversations file),
    else the run's validation set — its ``data.eval`` files, or the last ``train.val_samples``
    conversations of ``data.train``. Raises DataError when none is available."""
    from deepspec_core.data.conversations import read_conversations

    heldout = [Path(f).expanduser() for f in spec.data.eval]
    if data is not None:
        convs, source = list(read_conversations(data)), str(data)
    elif heldout:
        # The run trained on all of data.train: its tail is no stand-in for a missing data.eval.
        missing = [str(f) for f in heldout if not f.is_file()]
        if missing:
            raise DataError(
                f"calibration reads the run's validation set, and its data.eval file {missing[0]} is not on this machine",
                "copy it here, or pass --calibration-data FILE (conversations the draft did not train on)",
            )
        convs = [c for f in heldout for c in read_conversations(f)]
        source = f"data.eval ({', '.join(map(str, heldout))})"
    else:
        files = [Path(f).expanduser() for f in spec.data.train]
        if not spec.train.val_samples or not files or not all(f.is_file() for f in files):
            raise DataError(
                "calibration needs held-out prompts: the run has no validation split on this machine "
                f"(data.train {list(spec.data.train)}, train.val_samples {spec.train.val_samples})",
                "pass --calibration-data FILE (conversations the draft did not train on)",
            )
        convs = [c for f in files for c in read_conversations(f)][-spec.train.val_samples :]
        source = f"the last {len(convs)} conversations of {', '.join(map(str, files))}"
    prompts = []
    for c in convs[:limit]:
        first = next((i for i, m in enumerate(c["messages"]) if m["role"] == "assistant"), len(c["messages"]))
        msgs = [{"role": m["role"], "content": m["content"]} for m in c["messages"][:first]]
        if any(m["role"] == "user" for m in msgs):
            prompts.append(msgs)
    if not prompts:
        raise DataError(f"no prompt with a user turn in {source}", "pass --calibration-data FILE")
    return prompts, source


def calibrate_draft(
    loaded: Any, s: Any, data: str | Path | None, limit: int, write: bool = True,
    progress: Progress | bool | None = None,
) -> list[float]:
    """Fit STS temperatures on rounds decoded (fixed k, the eval's settings ``s``) from held-out
    prompts; store them with the checkpoint (``calibration.json``) and return them.

    ``loaded`` is a :class:`~deepspec_core.eval.loading.LoadedDraft`. Raises DataError without
    held-out prompts or rounds (a draft that reports no confidences, answers too short)."""
    from deepspec_core.decode.schedule import calibration_rounds, cumulative_ece, fit_sts
    from deepspec_core.decode.speculative import speculative_generate
    from deepspec_core.eval.loading import encode_prompt, eos_token_ids

    prompts, source = heldout_prompts(loaded.spec, data, limit)
    model, tok = loaded.target.model, loaded.target.tokenizer
    eos = eos_token_ids(model, tok)
    gens = []
    with as_progress(progress).stage("calibrate", total=len(prompts), unit="prompts") as stage:
        for i, messages in enumerate(prompts):
            g = torch.Generator(device=loaded.target.device).manual_seed(s.seed + i)
            ids = encode_prompt(tok, messages, s.thinking, loaded.target.device)
            gens.append(speculative_generate(model, loaded.draft, ids, s.num_draft_tokens, s.max_new_tokens,
                                             s.temperature, g, eos))
            stage.advance(1)
    try:
        conf, accepted = calibration_rounds(gens)
    except ValueError as err:
        raise DataError(f"cannot calibrate: {err}", "decode longer answers (--max-new-tokens) or more prompts") from None
    temps = fit_sts(conf, accepted)
    if not write:  # another process of a multi-process evaluation writes the file
        return temps
    save_temperatures(loaded.step_dir, temps, {
        "source": source, "prompts": len(prompts), "rounds": int(conf.shape[0]), "temperature": s.temperature,
        "ece15_heldout_raw": cumulative_ece(conf, accepted),
        "ece15_heldout_sts": cumulative_ece(apply_sts(conf, temps), accepted),
    })
    return temps


def load_temperatures(step_dir: Path) -> list[float] | None:
    """STS temperatures stored with a checkpoint by ``deepspec eval --calibrate``, if any."""
    import json

    path = step_dir / "calibration.json"
    return json.loads(path.read_text())["sts_temperatures"] if path.is_file() else None


def save_temperatures(step_dir: Path, temperatures: Sequence[float], info: dict[str, Any]) -> Path:
    from deepspec_core.io import atomic_write_json

    path = step_dir / "calibration.json"
    atomic_write_json(path, {"sts_temperatures": list(temperatures), **info})
    return path
