"""Formats library errors once: one line (plus a hint), an exit code, no traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console

from deepspec_core.errors import DeepspecError

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True, highlight=False)


def debug() -> bool:
    return os.environ.get("DEEPSPEC_DEBUG", "") not in ("", "0", "false")


def report(exc: BaseException) -> int:
    """Print ``exc`` for a user and return the exit code."""
    if isinstance(exc, DeepspecError):
        err_console.print(f"[bold red]error:[/] {exc.message}", markup=True, soft_wrap=True)
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {exc.hint}", soft_wrap=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        err_console.print("[yellow]interrupted[/] — rerun the same command to resume")
        return 130
    name = type(exc).__name__
    err_console.print(f"[bold red]error:[/] unexpected {name}: {exc}", soft_wrap=True)
    err_console.print("[yellow]hint:[/] rerun with DEEPSPEC_DEBUG=1 for the traceback, and report it")
    return 1


def handle_errors(fn: F) -> F:
    """Decorate a command: library errors become one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if debug():
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except (DeepspecError, KeyboardInterrupt, OSError, RuntimeError, ValueError) as exc:
            sys.exit(report(exc))

    return wrapper  # type: ignore[return-value]
