"""Typed errors raised by the library and formatted once by the CLI.

Every error carries a message that names the field, file or value at fault and, where there is
one, a hint saying how to fix it. The CLI prints ``error: <message>`` and ``hint: <hint>`` and
exits with ``exit_code``; ``DEEPSPEC_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations


class DeepspecError(Exception):
    """Base class of every error a user can cause."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class SpecError(DeepspecError):
    """A run spec, preset or override is invalid."""

    exit_code = 2


class DataError(DeepspecError):
    """An input data file is missing, unreadable or malformed."""


class CacheError(DeepspecError):
    """A feature cache is missing, corrupt, or does not match the run spec."""


class TargetError(DeepspecError):
    """A target model or tokenizer cannot be loaded or does not fit the spec."""


class CheckpointError(DeepspecError):
    """A run directory or checkpoint cannot be used as asked."""


class ExportError(DeepspecError):
    """A draft cannot be exported to a serving format, or an export fails its own checks."""


class ServerError(DeepspecError):
    """An inference server cannot be reached or keeps failing."""
