"""The CLI's rich consoles: one factory so every command prints alike.

On a terminal rich uses its width. Elsewhere — a log file, a pipe, a test runner — rich falls back
to 80 columns, which cut the eval and compare tables' columns to "benc…" and wrapped printed paths
across lines; there the width is ``COLUMNS`` when set, else 200, and printed text is never wrapped
(``soft_wrap``), so a path in a log can be copied whole.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

NON_TERMINAL_WIDTH = 200


def make_console(stderr: bool = False, **kwargs) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    terminal = hasattr(stream, "isatty") and stream.isatty()
    width = None if terminal or "COLUMNS" in os.environ else NON_TERMINAL_WIDTH
    return Console(stderr=stderr, soft_wrap=True, width=width, **kwargs)
