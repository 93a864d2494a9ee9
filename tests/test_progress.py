"""The progress protocol (deepspec_core.progress) and its CLI renderers: plain lines for logs, rich
bars for terminals, and which one a command picks."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from deepspec_cli.progress import PlainProgress, RichProgress, make_progress
from deepspec_core.progress import NullProgress, as_progress, describe, hms, reporting

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_carry_count_rate_eta_and_the_stage_metrics_then_a_final_line():
    lines: list[str] = []
    clock = Clock()
    p = PlainProgress(lines.append, interval=0, clock=clock)
    with p.stage("train", total=10, unit="steps") as st:
        clock.t += 8
        st.advance(4, loss=2.5, tau=1.75, lr=1e-3, tok_s=1234.0)
        p.log("val step 4: loss 2.4")
        clock.t += 12
        st.advance(6)
    assert lines[0] == ("train: 4/10 steps (40%) · 0.5 steps/s · eta 0m12s · loss 2.5 · τ 1.75 · lr 1.00e-03 · "
                        "1,234 tok/s")
    assert lines[1] == "val step 4: loss 2.4"
    assert lines[2].startswith("train: 10/10 steps (100%) · 0.5 steps/s · eta 0m00s · loss 2.5")  # metrics are kept
    assert lines[3].startswith("train: done, 10/10 steps (100%) in 0m20s · 0.5 steps/s · loss 2.5")
    assert len(lines) == 4


def test_plain_lines_come_at_most_once_per_interval_and_a_resumed_stage_rates_only_its_own_work():
    lines: list[str] = []
    clock = Clock()
    p = PlainProgress(lines.append, interval=30, clock=clock)
    with p.stage("train", total=1000, unit="steps", done=400) as st:
        for _ in range(100):  # 100 steps of 1 s: a line at 30, 60 and 90 s
            clock.t += 1
            st.advance(1)
    periodic, final = lines[:-1], lines[-1]
    assert [line.split(" · ")[0] for line in periodic] == [f"train: {s}/1,000 steps ({s / 1000:.0%})"
                                                         for s in (430, 460, 490)]
    assert " · 1 steps/s · eta 9m30s" in periodic[0]
    assert final.startswith("train: stopped at 500/1,000 steps (50%) in 1m40s · 1 steps/s")


def test_an_error_inside_a_stage_ends_it_as_stopped_and_an_unknown_total_has_no_eta():
    lines: list[str] = []
    clock = Clock()
    with pytest.raises(KeyboardInterrupt), PlainProgress(lines.append, interval=0, clock=clock).stage(
        "regen", unit="conv"
    ) as st:
        clock.t += 2
        st.advance(3, tok_s=50.0)
        raise KeyboardInterrupt
    assert lines == ["regen: 3 conv · 1.5 conv/s · 50 tok/s", "regen: stopped at 3 conv in 0m02s · 1.5 conv/s · 50 tok/s"]


def test_rich_bars_show_the_stage_with_its_rate_and_notes():
    out = io.StringIO()
    p = RichProgress(Console(file=out, force_terminal=True, width=160))
    with p.stage("eval humaneval", total=3, unit="samples") as st:
        st.advance(1, tau=2.5)
        p.log("a note")
        st.advance(2, tau=2.25)
    text = out.getvalue()
    assert "eval humaneval" in text and "3/3 samples" in text and "samples/s" in text and "τ 2.25" in text
    assert "a note" in text


def test_the_cli_picks_plain_lines_unless_its_stream_is_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(Console(file=io.StringIO())), PlainProgress)
    assert isinstance(make_progress(Console(file=Tty())), RichProgress)
    assert isinstance(make_progress(Console(file=Tty()), bars=False), PlainProgress)  # --no-progress


def test_core_defaults_to_silence_or_the_commands_renderer():
    notes: list[str] = []
    quiet = as_progress(False, log=notes.append)
    assert isinstance(quiet, NullProgress)
    with quiet.stage("x", total=2) as st:
        st.advance(2, loss=1.0)
    quiet.log("note")
    assert notes == ["note"]
    renderer = PlainProgress(lambda _line: None)
    with reporting(renderer):
        assert as_progress(None) is renderer and as_progress(True) is renderer
        assert isinstance(as_progress(False), NullProgress)  # asked for silence
    assert isinstance(as_progress(None), NullProgress)


def test_metric_display():
    assert describe({"loss": 2.34567, "tau": 1.8, "tau_greedy": None, "lr": 3e-4, "mb_s": 12.5, "samples": 1200}) == (
        "loss 2.346 · τ 1.8 · lr 3.00e-04 · 12.5 MB/s · samples 1,200"
    )
    assert [hms(s) for s in (5, 439, 7500, float("nan"))] == ["0m05s", "7m19s", "2h05m", "-"]
