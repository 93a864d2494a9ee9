"""Renderers of core's progress protocol (``deepspec_core.progress``): rich bars with rate and ETA
when stdout is a terminal; otherwise (nohup, SLURM logs, CI, a pipe) a plain line per stage every
``INTERVAL_S`` seconds and one when it ends, since a bar redrawn in place writes nothing readable
to a file and a log must show that a long stage is moving."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichBars
from rich.text import Text

from deepspec_core.progress import Progress, describe, hms, number, reporting

INTERVAL_S = 30.0  # between two plain lines of one stage: a readable log, still a sign of life


def _count(done: float, total: float | None, unit: str, share: bool = True) -> str:
    done_s = number(int(done)) if float(done).is_integer() else number(done)
    if total is None:
        return f"{done_s} {unit}"
    total_s = number(int(total)) if float(total).is_integer() else number(total)
    return f"{done_s}/{total_s} {unit}" + (f" ({done / total if total else 1.0:.0%})" if share else "")


class _PlainStage:
    def __init__(self, name: str, total: float | None, unit: str, done: float, owner: PlainProgress):
        self.name, self.total, self.unit, self.done = name, total, unit, done
        self.owner = owner
        self.metrics: dict[str, Any] = {}
        self._done0 = done  # a resumed stage's rate counts only the work of this run
        self._t0 = self._last = owner.clock()

    def advance(self, n: float = 1, **metrics: Any) -> None:
        self.done += n
        self.metrics.update(metrics)
        now = self.owner.clock()
        if now - self._last >= self.owner.interval:
            self._last = now
            self.owner.write(self.line(now))

    def _rate(self, now: float) -> float:
        return (self.done - self._done0) / max(now - self._t0, 1e-9)

    def line(self, now: float) -> str:
        """``train: 120/300 steps (40%) · 0.41 steps/s · eta 7m19s · loss 2.345 · τ 1.87``"""
        rate = self._rate(now)
        parts = [f"{self.name}: {_count(self.done, self.total, self.unit)}", f"{number(rate)} {self.unit}/s"]
        if self.total is not None:
            parts.append(f"eta {hms((self.total - self.done) / rate if rate > 0 else float('nan'))}")
        return " · ".join(parts + ([describe(self.metrics)] if self.metrics else []))

    def final(self, now: float, ok: bool) -> str:
        """Done, or stopped (an error, Ctrl-C, a preempted run) with how far it got."""
        finished = ok and (self.total is None or self.done >= self.total)
        head = (f"{self.name}: done, {_count(self.done, self.total, self.unit)}" if finished
                else f"{self.name}: stopped at {_count(self.done, self.total, self.unit)}")
        parts = [f"{head} in {hms(now - self._t0)}", f"{number(self._rate(now))} {self.unit}/s"]
        return " · ".join(parts + ([describe(self.metrics)] if self.metrics else []))


class PlainProgress:
    """One line per stage at most every ``interval`` seconds (step/items, rate, ETA and the stage's
    metrics), and a last one when the stage ends; ``write`` gets each line."""

    def __init__(self, write: Callable[[str], None] | None = None, interval: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.write = write or (lambda line: print(line, flush=True))
        self.interval, self.clock = interval, clock

    @contextlib.contextmanager
    def stage(self, name: str, total: float | None = None, unit: str = "it", done: float = 0) -> Iterator[_PlainStage]:
        st = _PlainStage(name, total, unit, done, self)
        ok = False
        try:
            yield st
            ok = True
        finally:
            self.write(st.final(self.clock(), ok))

    def log(self, line: str) -> None:
        self.write(line)


class _Count(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(_count(task.completed, task.total, task.fields["unit"], share=False))


class _Rate(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{number(speed) if speed else '-'} {task.fields['unit']}/s", style="cyan")


class _RichStage:
    def __init__(self, bars: RichBars, task: Any):
        self.bars, self.task = bars, task
        self.metrics: dict[str, Any] = {}

    def advance(self, n: float = 1, **metrics: Any) -> None:
        self.metrics.update(metrics)
        self.bars.update(self.task, advance=n, metrics=describe(self.metrics))


class RichProgress:
    """Stages as rich bars (count, rate, metrics, elapsed, ETA); the display lives while a stage is
    open, so that tables and notes between stages print as usual."""

    def __init__(self, console: Console):
        self.console = console
        self._bars: RichBars | None = None

    @contextlib.contextmanager
    def stage(self, name: str, total: float | None = None, unit: str = "it", done: float = 0) -> Iterator[_RichStage]:
        outer = self._bars is None
        if outer:
            self._bars = RichBars(
                TextColumn("[bold]{task.description}"), BarColumn(), _Count(), _Rate(),
                TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console,
            )
            self._bars.start()
        bars = self._bars
        assert bars is not None
        # rich annotates add_task's `completed` as int, but Task.completed and update() take float.
        task = bars.add_task(name, total=total, completed=done, unit=unit, metrics="")  # type: ignore[arg-type]
        try:
            yield _RichStage(bars, task)
        finally:
            if outer:
                bars.stop()
                self._bars = None

    def log(self, line: str) -> None:
        (self._bars.console if self._bars else self.console).print(line, markup=False, highlight=False)


def make_progress(console: Console, bars: bool = True) -> Progress:
    """Rich bars when the console's stream (stdout for every command but ``target tiny``) is a
    terminal and ``bars``, else plain lines through ``console``."""
    if bars and getattr(console.file, "isatty", lambda: False)():
        return RichProgress(console)
    # soft_wrap: a plain line stays one line in a log, whatever width rich guesses for a file
    return PlainProgress(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
                         interval=INTERVAL_S)


@contextlib.contextmanager
def progress_for(console: Console, bars: bool = True) -> Iterator[Progress]:
    """The command's renderer, also the default of stages reached without a progress argument."""
    with reporting(make_progress(console, bars)) as progress:
        yield progress
