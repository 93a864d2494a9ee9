"""Default locations. ``DEEPSPEC_HOME`` moves everything deepspec writes by default."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Where deepspec keeps built targets and other reusable artefacts."""
    env = os.environ.get("DEEPSPEC_HOME")
    return Path(env).expanduser() if env else Path("~/.deepspec").expanduser()


def default_output_root() -> Path:
    """Root of run directories: ``$DEEPSPEC_HOME/checkpoints``, else ``~/checkpoints`` (reference layout)."""
    env = os.environ.get("DEEPSPEC_HOME")
    return Path(env).expanduser() / "checkpoints" if env else Path("~/checkpoints").expanduser()


def targets_dir() -> Path:
    return home() / "targets"
