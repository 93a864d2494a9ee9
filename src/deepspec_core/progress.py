"""How long stages report progress: one small protocol; the CLI renders it.

Core code opens a stage and advances it, with the figures that matter for that stage::

    with as_progress(progress).stage("train", total=steps, unit="steps", done=start) as st:
        for ...:
            st.advance(1, loss=loss, tau=tau, tok_s=tps)

and never draws anything itself: the CLI (``deepspec_cli.progress``) turns the same calls into rich
bars on a terminal, or into a plain line every ~30 s when the output goes to a file (nohup, SLURM
logs, CI), so a log shows a long stage moving. A library caller passes nothing and sees nothing.

Metric names are plain identifiers; :func:`describe` gives them their display form (``tau`` → τ,
``tok_s`` → tok/s, ``mb_s`` → MB/s), which both renderers use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class Stage(Protocol):
    def advance(self, n: float = 1, **metrics: Any) -> None:
        """``n`` more units done (0: only new metrics); ``metrics`` replace the earlier values."""
        ...


class Progress(Protocol):
    def stage(
        self, name: str, total: float | None = None, unit: str = "it", done: float = 0
    ) -> contextlib.AbstractContextManager[Stage]:
        """A stage of ``total`` units (None: unknown), ``done`` of them already (a resumed run)."""
        ...

    def log(self, line: str) -> None:
        """A note on a line of its own (above a live bar, or in order with the plain lines)."""
        ...


class NullStage:
    def advance(self, n: float = 1, **metrics: Any) -> None:
        pass


class NullProgress:
    """Shows nothing; notes go to ``log`` when one is given (a library caller's ``say``)."""

    def __init__(self, log: Callable[[str], None] | None = None):
        self._log = log

    @contextlib.contextmanager
    def stage(self, name: str, total: float | None = None, unit: str = "it", done: float = 0) -> Iterator[Stage]:
        yield NullStage()

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)


# The renderer of the running CLI command, for stages reached without a progress argument (the tiny
# target built on first use of the name "tiny", deep inside loading a target).
_ambient: list[Progress] = []


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Make ``progress`` the default of every stage in this block (the CLI wraps a command in it)."""
    _ambient.append(progress)
    try:
        yield progress
    finally:
        _ambient.remove(progress)


def as_progress(progress: Progress | bool | None = None, log: Callable[[str], None] | None = None) -> Progress:
    """The reporter a stage uses: ``progress`` itself; for None or True the CLI's (see
    :func:`reporting`) when there is one; else — and always for False — silent stages whose notes
    go to ``log``. Booleans are what these arguments used to be (whether to draw a bar)."""
    if progress is not None and not isinstance(progress, bool):
        return progress
    if progress is not False and _ambient:
        return _ambient[-1]
    return NullProgress(log)


LABELS = {"tau": "τ", "tau_greedy": "τ greedy", "tok_s": "tok/s", "mb_s": "MB/s"}


def describe(metrics: dict[str, Any]) -> str:
    """``loss 2.345 · τ 1.870 · 1,234 tok/s``: metrics as a stage reported them, rates after the value."""
    parts = []
    for key, value in metrics.items():
        if value is None:
            continue
        label = LABELS.get(key, key)
        text = number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        parts.append(f"{text} {label}" if label.endswith("/s") else f"{label} {text}")
    return " · ".join(parts)


def number(x: float) -> str:
    """Counts with thousands separators, rates and losses with 4 significant digits, tiny values
    (learning rates) in scientific notation."""
    if isinstance(x, int):
        return f"{x:,}"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if x != 0 and abs(x) < 1e-2:
        return f"{x:.2e}"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def hms(seconds: float) -> str:
    """``7m19s``, ``2h05m``; ``-`` while there is no rate to estimate from."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
