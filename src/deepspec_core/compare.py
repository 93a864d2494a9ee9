"""Put several drafts' evaluation results side by side, like for like.

Inputs are ``results.json`` files, evaluation directories holding one, or run directories (their
newest ``eval/<step>/results.json``). One draft may be given as several replicas (e.g. the same
recipe trained with different seeds): its τ is then their mean, reported with the sample standard
deviation over replicas, which says which differences between drafts are larger than that noise.
Results whose protocols differ in anything that moves τ are refused with the list of differences
unless the caller allows it.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from deepspec_core.errors import DataError
from deepspec_core.eval.metrics import SCHEMA_VERSION, EvalResults, Protocol
from deepspec_core.eval.plots import save_figure
from deepspec_core.io import atomic_write_json, atomic_write_text, output_dir

DOMAINS = ("math", "code", "chat")


@dataclass
class Entry:
    name: str
    path: Path
    result: EvalResults
    replicas: list[EvalResults] = field(default_factory=list)  # further results of the same recipe

    @property
    def results(self) -> list[EvalResults]:
        return [self.result, *self.replicas]


@dataclass
class Comparison:
    entries: list[Entry]
    baseline: str
    benchmarks: list[str]  # rows, grouped by domain
    domains: dict[str, list[str]]  # domain → benchmarks present
    tau: dict[str, dict[str, float]]  # row (benchmark, domain mean or "macro") → draft → τ (where defined)
    speedup: dict[str, dict[str, float]]  # same rows, where measured
    mismatches: list[str] = field(default_factory=list)
    spread: dict[str, dict[str, float]] = field(default_factory=dict)  # row → draft → sd of τ over replicas
    # row (benchmark or "macro") → draft → 95% bootstrap interval over prompts (single results only)
    ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # row → draft → paired-bootstrap interval of τ(draft) − τ(baseline) on the same prompts
    diff_ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def tau_text(self, row: str, name: str) -> str:
        """τ of a cell as shown: "–" where undefined, "± sd" where the draft has replicas."""
        v = self.tau.get(row, {}).get(name)
        if v is None:
            return "–"
        sd = self.spread.get(row, {}).get(name)
        ci = self.ci.get(row, {}).get(name)
        return f"{v:.2f}" + (f" ± {sd:.2f}" if sd is not None else "") + (
            f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else "")

    def resolved(self, row: str, name: str) -> bool | None:
        """Whether τ(name) − τ(baseline) on ``row`` is resolved (its interval excludes 0); None: no interval."""
        d = self.diff_ci.get(row, {}).get(name)
        return None if d is None else (d[0] > 0 or d[1] < 0)

    def replica_note(self) -> str:
        counts = sorted({len(e.results) for e in self.entries if e.replicas})
        if not counts:
            return ""
        return f"τ is the mean ± sample sd over {'/'.join(map(str, counts))} replicas (e.g. training seeds)."

    def gain(self, row: str, name: str) -> float | None:
        base = self.tau.get(row, {}).get(self.baseline)
        value = self.tau.get(row, {}).get(name)
        return None if base in (None, 0) or value is None else value / base - 1.0


# -- loading -------------------------------------------------------------------------------------


def _step_of(path: Path) -> int:
    m = re.search(r"(\d+)$", path.name)
    return int(m.group(1)) if m else -1


def find_results(path: Path) -> Path:
    """A results.json, a directory holding one, or a run directory's newest eval/<step>/results.json."""
    path = path.expanduser()
    if path.is_file():
        return path
    if (path / "results.json").is_file():
        return path / "results.json"
    evals = sorted((p for p in (path / "eval").glob("*/results.json")), key=lambda p: _step_of(p.parent))
    if evals:
        return evals[-1]
    raise DataError(f"no results.json in {path}", "run `deepspec eval --draft RUN` first, or pass a results.json")


def _draft_name(result: EvalResults, fallback: str) -> str:
    draft = Path(result.protocol.draft)
    name = draft.parent.name if draft.name.startswith("step_") or draft.name == "step_latest" else draft.name
    return name or fallback


def _load_result(raw: str | Path) -> tuple[Path, EvalResults]:
    file = find_results(Path(raw))
    try:
        data = json.loads(file.read_text())
        version = data.get("schema_version") if isinstance(data, dict) else None
        if isinstance(version, int) and version != SCHEMA_VERSION:
            raise DataError(
                f"{file} has results schema {version}; this deepspec reads schema {SCHEMA_VERSION}"
                + (" (τ then credited tokens that were never committed)" if version < 2 else ""),
                "re-run `deepspec eval` on that draft",
            )
        return file, EvalResults.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as err:
        first = str(err).splitlines()[0]
        raise DataError(f"{file} is not a deepspec results.json: {first}", "regenerate it with `deepspec eval`") from err


def _policy(r: EvalResults) -> str:
    p = r.protocol
    return p.draft_length + (f"{p.draft_length_threshold:g}" if p.draft_length_threshold is not None else "")


def load_entries(paths: Sequence[str | Path | Sequence[str | Path]]) -> list[Entry]:
    """One entry per item: a path, or a sequence of paths (replicas of one draft, named by the first)."""
    loaded = []
    for raw in paths:
        group = [raw] if isinstance(raw, (str, Path)) else list(raw)
        loaded.append([_load_result(p) for p in group])
    # Results of one draft under several draft-length policies: the policy is part of the name.
    policies = {_policy(r) for group in loaded for _, r in group}
    entries: list[Entry] = []
    for (file, result), *rest in loaded:
        name = _draft_name(result, result.protocol.algorithm) + (f"@{_policy(result)}" if len(policies) > 1 else "")
        taken = {e.name for e in entries}
        if name in taken:  # two runs with one name: disambiguate by algorithm, then by position
            name = f"{name}-{result.protocol.algorithm}" if f"{name}-{result.protocol.algorithm}" not in taken else f"{name}-{len(entries)}"
        entries.append(Entry(name, file, result, [r for _, r in rest]))
    if not entries:
        raise DataError("nothing to compare", "pass results.json files, eval directories or run directories")
    return entries


def protocol_differences(entries: list[Entry]) -> list[str]:
    """Human-readable differences of the τ-relevant protocol fields against the first entry
    (replicas included, labelled ``name#i``)."""
    ref = entries[0]
    diffs: list[str] = []

    def bench_map(r: EvalResults) -> dict[str, tuple[int, str]]:
        return {b.name: (b.samples, b.content_hash) for b in r.protocol.benchmarks}

    others = [(e.name if i == 0 else f"{e.name}#{i}", r) for e in entries for i, r in enumerate(e.results)][1:]
    for label, other in others:
        for key in Protocol.tau_fields():
            a, b = getattr(ref.result.protocol, key), getattr(other.protocol, key)
            if a != b:
                diffs.append(f"{key}: {ref.name}={a!r} vs {label}={b!r}")
        ra, rb = bench_map(ref.result), bench_map(other)
        if set(ra) != set(rb):
            diffs.append(f"benchmarks: {ref.name}={sorted(ra)} vs {label}={sorted(rb)}")
        for name in sorted(set(ra) & set(rb)):
            if ra[name][0] != rb[name][0]:
                diffs.append(f"{name} samples: {ref.name}={ra[name][0]} vs {label}={rb[name][0]}")
            elif ra[name][1] != rb[name][1]:
                diffs.append(f"{name} prompts differ (content hash {ra[name][1]} vs {rb[name][1]})")
    return diffs


# -- the comparison ------------------------------------------------------------------------------


def _row_values(r: EvalResults, domains: dict[str, list[str]]) -> tuple[dict[str, float], dict[str, float]]:
    """τ and speedup per row (benchmark, domain mean, macro) of one result, where defined."""
    tau = {b: x.tau for b, x in r.benchmarks.items() if x.tau is not None}
    speed = {b: x.speed.speedup for b, x in r.benchmarks.items() if x.speed is not None}
    for d, members in domains.items():
        known = [tau[b] for b in members if b in tau]
        if known:
            tau[f"{d} mean"] = sum(known) / len(known)
    if r.macro.tau is not None:
        tau["macro"] = r.macro.tau
    if r.macro.speedup is not None:
        speed["macro"] = r.macro.speedup
    return tau, speed


def build_comparison(entries: list[Entry], baseline: str | None = None, allow_protocol_mismatch: bool = False) -> Comparison:
    diffs = protocol_differences(entries)
    if diffs and not allow_protocol_mismatch:
        raise DataError(
            "results were measured under different protocols: " + "; ".join(diffs),
            "evaluate them alike, or pass --allow-protocol-mismatch to compare anyway",
        )
    names = [e.name for e in entries]
    if baseline is None:
        baseline = names[0]
    elif baseline not in names:
        # a draft named by its policy too ("eagle3@fixed") is still meant by its own name when unique
        same = [n for n in names if n.split("@", 1)[0] == baseline]
        if len(same) != 1:
            raise DataError(f"--baseline {baseline!r} is not one of the drafts", f"choose one of: {', '.join(names)}")
        baseline = same[0]

    domain_of: dict[str, str] = {}
    for e in entries:
        for b in e.result.protocol.benchmarks:
            domain_of.setdefault(b.name, b.domain)
    benchmarks = sorted(domain_of, key=lambda b: (DOMAINS.index(domain_of[b]) if domain_of[b] in DOMAINS else 99, b))
    domains = {d: [b for b in benchmarks if domain_of[b] == d] for d in dict.fromkeys(domain_of[b] for b in benchmarks)}

    tau: dict[str, dict[str, float]] = {}
    speed: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    for e in entries:
        per_replica = [_row_values(r, domains) for r in e.results]
        for out, which in ((tau, 0), (speed, 1)):
            for row in dict.fromkeys(k for values in per_replica for k in values[which]):
                vals = [values[which][row] for values in per_replica if row in values[which]]
                out.setdefault(row, {})[e.name] = statistics.fmean(vals)
                if which == 0 and len(vals) > 1:
                    spread.setdefault(row, {})[e.name] = statistics.stdev(vals)
    ci, diff_ci = _intervals(entries, baseline, benchmarks)
    return Comparison(entries, baseline, benchmarks, domains, tau, speed, diffs, spread, ci, diff_ci)


def _intervals(entries: list[Entry], baseline: str, benchmarks: list[str]) -> tuple[dict, dict]:
    """Bootstrap intervals (:mod:`deepspec_core.eval.bootstrap`) of τ per benchmark and macro, and of
    each draft's difference from the baseline, paired over prompts. Only for drafts given as one
    result whose benchmarks carry per-prompt rounds (replicas report their spread instead)."""
    from deepspec_core.eval import bootstrap as bs

    def prompts(e: Entry) -> dict[str, list[list[int]]] | None:
        if e.replicas:
            return None
        per = {b: r.prompt_rounds for b, r in e.result.benchmarks.items() if r.prompt_rounds is not None}
        return per if per and len(per) == len(e.result.benchmarks) else None

    rows_of = {e.name: prompts(e) for e in entries}
    ci: dict[str, dict[str, tuple[float, float]]] = {}
    diff_ci: dict[str, dict[str, tuple[float, float]]] = {}
    base = rows_of.get(baseline)
    for e in entries:
        mine = rows_of[e.name]
        if mine is None:
            continue
        # The evaluation stored its intervals (same resampler, same seed); older results get them here.
        stored = {b: r.tau_ci95 for b, r in e.result.benchmarks.items()} | {"macro": e.result.macro.tau_ci95}
        for b in benchmarks:
            if b in mine and (iv := _stored(stored[b]) or bs.tau_interval(mine[b])) is not None:
                ci.setdefault(b, {})[e.name] = iv
        if (iv := _stored(stored["macro"]) or bs.macro_tau_interval(list(mine.values()))) is not None:
            ci.setdefault("macro", {})[e.name] = iv
        if base is None or e.name == baseline or set(base) != set(mine):
            continue
        shared = [b for b in benchmarks if b in mine]
        try:
            for b in shared:
                if (iv := bs.paired_difference_interval([mine[b]], [base[b]])) is not None:
                    diff_ci.setdefault(b, {})[e.name] = iv
            if (iv := bs.paired_difference_interval([mine[b] for b in shared], [base[b] for b in shared])) is not None:
                diff_ci.setdefault("macro", {})[e.name] = iv
        except ValueError:  # different prompt counts: compared anyway under --allow-protocol-mismatch
            continue
    return ci, diff_ci


def _stored(iv: list[float] | None) -> tuple[float, float] | None:
    return None if iv is None else (iv[0], iv[1])


def rows(c: Comparison) -> list[str]:
    return [*c.benchmarks, *(f"{d} mean" for d in c.domains), "macro"]


# -- reports -------------------------------------------------------------------------------------


def _fmt_gain(g: float | None) -> str:
    return "" if g is None else f"{g:+.1%}"


def markdown_report(c: Comparison) -> str:
    names = [e.name for e in c.entries]
    p = c.entries[0].result.protocol
    lines = [
        "# deepspec compare",
        "",
        f"Target `{p.target}`, temperature {p.temperature}, thinking {'on' if p.thinking else 'off'}, "
        f"max new tokens {p.max_new_tokens}, k = {p.num_draft_tokens}, "
        f"{'every user turn' if p.all_turns else 'first user turn'}; τ counts the committed tokens of a round, "
        f"bonus token included. Baseline: **{c.baseline}**. {c.replica_note()}".rstrip(),
        "",
        "| benchmark | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row in rows(c):
        cells = []
        for n in names:
            gain = "" if n == c.baseline else _fmt_gain(c.gain(row, n))
            cells.append(c.tau_text(row, n) + (f" ({gain})" if gain else ""))
        label = f"**{row}**" if row == "macro" or row.endswith(" mean") else row
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if c.ci:
        lines += ["", "Brackets: 95% bootstrap interval of τ over the benchmark's prompts (macro: each "
                  "benchmark's prompts resampled)."]
    if c.diff_ci:
        others = [n for n in names if n != c.baseline and any(n in v for v in c.diff_ci.values())]
        lines += ["", f"τ minus {c.baseline}'s on the same prompts (paired bootstrap, 95%); *resolved* where "
                  "the interval excludes 0:", "",
                  "| benchmark | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
        for row in [r for r in rows(c) if r in c.diff_ci]:
            cells = []
            for n in others:
                d = c.diff_ci[row].get(n)
                cells.append("–" if d is None else f"[{d[0]:+.2f}, {d[1]:+.2f}]" + (" *resolved*" if c.resolved(row, n) else ""))
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if c.speedup:
        lines += ["", "Speedup over target-only decoding (same process, same prompts and lengths):", "",
                  "| benchmark | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for row in [r for r in rows(c) if r in c.speedup]:
            cells = [f"{c.speedup[row][n]:.2f}×" if n in c.speedup[row] else "–" for n in names]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if c.mismatches:
        lines += ["", "**Protocol differences (compared anyway):**", ""] + [f"- {d}" for d in c.mismatches]
    lines += ["", "Inputs:", ""] + [
        f"- {e.name} ({e.result.protocol.algorithm}): `{e.path}`"
        + (f" and {len(e.replicas)} replicas" if e.replicas else "")
        for e in c.entries
    ]
    return "\n".join(lines) + "\n"


def summary_json(c: Comparison) -> dict:
    return {
        "baseline": c.baseline,
        "drafts": {e.name: {"algorithm": e.result.protocol.algorithm, "results": str(e.path)} for e in c.entries},
        "rows": rows(c),
        "domains": c.domains,
        "tau": c.tau,
        "tau_sd_over_replicas": c.spread,
        "replicas": {e.name: len(e.results) for e in c.entries},
        "gain_vs_baseline": {r: {n: c.gain(r, n) for n in c.tau.get(r, {})} for r in rows(c)},
        "speedup": c.speedup,
        "tau_ci95": {r: {n: list(v) for n, v in d.items()} for r, d in c.ci.items()},
        "diff_vs_baseline_ci95": {r: {n: list(v) for n, v in d.items()} for r, d in c.diff_ci.items()},
        "protocol_differences": c.mismatches,
    }


def plot_title(c: Comparison) -> str:
    p = c.entries[0].result.protocol
    policies = {_policy(e.result) for e in c.entries}
    policy = f" ({policies.pop()})" if len(policies) == 1 else ""
    # the last two path components: a hub id whole ("Qwen/Qwen3-4B"), a local dir with its parent
    name = "/".join(Path(p.target).parts[-2:]) or p.target
    return (f"target {name} · T={p.temperature:g} · k={p.num_draft_tokens}{policy} · "
            f"thinking {'on' if p.thinking else 'off'}")


def plot_comparison(c: Comparison, out_dir: Path) -> list[Path]:
    """Conditional acceptance per position (a panel per domain, as in the DSpark paper's Figure 2),
    τ per benchmark and, when measured, the speedup per benchmark, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    title = plot_title(c)
    domains = list(c.domains)
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 3.6), squeeze=False)
    for ax, d in zip(axes[0], domains, strict=True):
        for e in c.entries:
            curves = [e.result.benchmarks[b].acceptance_conditional for b in c.domains[d] if b in e.result.benchmarks]
            if not curves:
                continue
            k = min(len(x) for x in curves)
            # Positions no round reached are undefined: a gap in the line, not a 0.
            known = [[v for v in (x[j] for x in curves) if v is not None] for j in range(k)]
            mean = [sum(v) / len(v) if v else float("nan") for v in known]
            ax.plot(range(1, k + 1), mean, marker="o", label=e.name)
            ax.set_xticks(range(1, k + 1))
        ax.set_title(d)
        ax.set_xlabel("draft position j")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("P(accept j | accepted 1..j-1)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    written.append(save_figure(fig, out_dir / "acceptance_by_position.png"))

    written.append(_bars(plt, c, c.tau, "τ (accepted length)", f"τ per benchmark · {title}", 1.0,
                         out_dir / "tau_by_benchmark.png"))
    if c.speedup:
        written.append(_bars(plt, c, c.speedup, "speedup over the target alone (×)",
                             f"measured speedup · {title}", 1.0, out_dir / "speedup_by_benchmark.png"))
    return written


def _bars(plt, c: Comparison, values: dict[str, dict[str, float]], ylabel: str, title: str, ref: float,
          path: Path) -> Path:
    """Grouped bars: one group per row (benchmarks, macro), one bar per draft; a line at ``ref``."""
    labels = [r for r in [*c.benchmarks, "macro"] if r in values]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) * max(1, len(c.entries)) / 2), 3.8))
    width = 0.8 / len(c.entries)
    for i, e in enumerate(c.entries):
        vals = [values.get(lbl, {}).get(e.name, float("nan")) for lbl in labels]
        ax.bar([x + i * width for x in range(len(labels))], vals, width, label=e.name)
    ax.set_xticks([x + width * (len(c.entries) - 1) / 2 for x in range(len(labels))], labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.axhline(ref, color="grey", lw=0.8)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def compare(
    paths: Sequence[str | Path | Sequence[str | Path]], out_dir: str | Path | None = None,
    baseline: str | None = None, allow_protocol_mismatch: bool = False,
) -> tuple[Comparison, list[Path]]:
    """Load, check and compare; write report.md, summary.json and plots to ``out_dir`` when given.
    An item of ``paths`` that is a sequence gives one draft's replicas (see the module docstring)."""
    out = None if out_dir is None else output_dir(out_dir, "--out", DataError)
    c = build_comparison(load_entries(paths), baseline, allow_protocol_mismatch)
    written: list[Path] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.md", markdown_report(c))
        atomic_write_json(out / "summary.json", summary_json(c))
        written = [out / "report.md", out / "summary.json", *plot_comparison(c, out)]
    return c, written
