"""Fixtures for the training tests: docstring→function chats from the stdlib (what the tiny target
was trained on) and a factory of small, fast run specs on the quick tiny target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepspec_core.spec import RunSpec, load_spec


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    """~200 conversations in the conversation format (docs/data.md), from a fixed slice of the stdlib."""
    from deepspec_core.targets import tiny_data as td

    root = td.stdlib_root()
    files = [f for f in td.stdlib_files(root) if f.name in ("textwrap.py", "shlex.py", "fractions.py", "string.py",
                                                             "bisect.py", "heapq.py", "copy.py", "glob.py",
                                                             "fnmatch.py", "calendar.py", "statistics.py")]
    convs = [c for src in td.read_sources(files, root) for c in td.chat_pairs(src, max_answer_chars=600)]
    path = tmp_path_factory.mktemp("chats") / "train.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in convs[:200]))
    return path


def _base_sets(tiny_target: Path, chat_file: Path) -> list[str]:
    return [f"target.model='{tiny_target}'", f"data.train=['{chat_file}']", "data.max_length=96"]


@pytest.fixture(scope="session")
def feature_cache(tiny_target, chat_file, tmp_path_factory) -> Path:
    """An offline feature cache (default codec) of ``chat_file`` for the quick tiny target."""
    from deepspec_core.cache.writer import build_cache

    path = tmp_path_factory.mktemp("cache") / "features"
    build_cache(load_spec("tiny-dflash", [*_base_sets(tiny_target, chat_file), f"cache.path='{path}'"]))
    return path


@pytest.fixture
def make_spec(tiny_target, chat_file, tmp_path):
    """A RunSpec for ``algo`` on the quick tiny target with online features, written under tmp_path."""

    def make(algo: str = "dflash", *sets: str, root: Path | None = None) -> RunSpec:
        return load_spec(
            f"tiny-{algo}",
            [
                *_base_sets(tiny_target, chat_file),
                "cache.online=true",
                f"output.root='{root or tmp_path}'",
                "train.global_batch_size=8",
                "train.micro_batch_size=4",
                "train.val_samples=8",
                "train.max_steps=6",
                "train.log_every=2",
                "train.val_every=3",
                "train.save_every=3",
                "train.tensorboard=false",
                *sets,
            ],
        )

    return make
