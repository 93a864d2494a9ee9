"""Small file helpers: atomic writes, content hashes, and output paths checked before any work."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deepspec_core.errors import DeepspecError


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_fingerprint(directory: Path | str, patterns: tuple[str, ...], samples: int = 8) -> str | None:
    """A cheap fingerprint of the files matching ``patterns`` in ``directory``: name, size and the
    sha256 of ``samples`` 1 MiB blocks spread evenly over each file, first and last included (8 MiB
    read per file, not gigabytes; replaced or retrained weights change them). None when nothing matches."""
    directory = Path(directory)
    files = sorted({p for pattern in patterns for p in directory.glob(pattern) if p.is_file()})
    if not files:
        return None
    h = hashlib.sha256()
    block = 1 << 20
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as f:
            for k in range(samples):
                f.seek(max(size - block, 0) * k // max(samples - 1, 1))
                h.update(f.read(block))
    return h.hexdigest()[:16]


def output_dir(path: Path | str, what: str, error: type[DeepspecError]) -> Path:
    """``path`` as an output directory, refused with ``error`` where a file stands, so a command
    fails before it computes anything rather than when it first writes. ``what`` names it in the
    message (``"--out"``, ``"cache directory"``)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise error(f"{what} {p} is a file", "give a directory (it is created if missing)")
    return p


def output_file(path: Path | str, what: str, error: type[DeepspecError]) -> Path:
    """``path`` as an output file, refused with ``error`` where a directory stands (see ``output_dir``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise error(f"{what} {p} is a directory", "give the path of a file to write, e.g. data/train.jsonl")
    return p
