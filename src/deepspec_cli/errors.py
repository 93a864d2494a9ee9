"""Formats library errors once: one line (plus a hint), an exit code, no traceback.

A typed :class:`DeepspecError` is a user's mistake or a known condition: its message and hint.
Anything else is a bug or an environment failure (out of memory, a driver): one line with the
path of a crash log that holds the full traceback."""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from deepspec_cli.console import make_console
from deepspec_core.errors import DeepspecError

F = TypeVar("F", bound=Callable[..., Any])

err_console = make_console(stderr=True, highlight=False)


def debug() -> bool:
    return os.environ.get("DEEPSPEC_DEBUG", "") not in ("", "0", "false")


def report(exc: BaseException) -> int:
    """Print ``exc`` for a user and return the exit code."""
    if isinstance(exc, DeepspecError):
        # User text (paths, TOML, lists like [9]) must not be read as rich markup.
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", soft_wrap=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        err_console.print("\n[yellow]interrupted[/] — rerun the same command to resume")
        return 130
    name = type(exc).__name__
    log = crash_log(exc)
    err_console.print(f"[bold red]error:[/] unexpected {name}: {escape(str(exc).splitlines()[0] if str(exc) else '')}",
                      soft_wrap=True)
    err_console.print(f"[yellow]hint:[/] the full traceback is in {escape(str(log))}; please report it", soft_wrap=True)
    return 1


def crash_log(exc: BaseException) -> Path:
    """Write the traceback of ``exc`` to ``crash-<time>.log`` in the run directory of the job that
    crashed (``exc.log_dir``, set by training), else in ``$DEEPSPEC_HOME/logs``; return its path."""
    from deepspec_core.paths import home

    folder = getattr(exc, "log_dir", None) or home() / "logs"
    path = Path(folder) / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"deepspec {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(exc)))
    except OSError:  # the home is not writable: fall back to the temporary directory
        import tempfile

        path = Path(tempfile.gettempdir()) / path.name
        path.write_text("".join(traceback.format_exception(exc)))
    return path


def handle_errors(fn: F) -> F:
    """Decorate a command: library errors become one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if debug():
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except click.exceptions.Exit:  # typer.Exit: a deliberate exit, not an error
            raise
        except (DeepspecError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 — formatted once, logged
            sys.exit(report(exc))

    return wrapper  # type: ignore[return-value]
