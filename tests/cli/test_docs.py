"""docs/cli.md is generated from the app; this fails when someone changes a command and not the doc."""

from pathlib import Path

import pytest

from deepspec_cli.docgen import render_cli_reference

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date():
    assert DOC.is_file(), "docs/cli.md is missing: python -m deepspec_cli.docgen > docs/cli.md"
    assert DOC.read_text() == render_cli_reference(), "docs/cli.md is stale: python -m deepspec_cli.docgen > docs/cli.md"


def test_reference_lists_every_command():
    text = render_cli_reference()
    for cmd in ("deepspec spec show", "deepspec data regen", "deepspec data cache", "deepspec train", "deepspec eval",
                "deepspec compare", "deepspec demo", "deepspec target import"):
        assert f"`{cmd}`" in text


def test_no_comment_or_doc_points_outside_the_repository():
    """Facts the code relies on are copied into docs/ (reference.md); nothing cites the design
    notes the project was started from."""
    root = DOC.parents[1]
    bad = []
    for path in [*root.glob("src/**/*.py"), *root.glob("tests/**/*.py"), *root.glob("docs/*.md"),
                 *root.glob("kernels/*.py"), *root.glob("benchmarks/*.py"), *root.glob("examples/**/*"),
                 *root.glob("scripts/*"), root / "README.md"]:
        if path.is_file() and path.suffix in (".py", ".md", ".sh", ".toml") and path != Path(__file__):
            text = path.read_text(encoding="utf-8")
            bad += [f"{path.relative_to(root)}: {m}" for m in ("../shared", "REFERENCE §", "DESIGN §", "DESIGN.md",
                                                                "REFERENCE.md") if m in text]
    assert bad == []
