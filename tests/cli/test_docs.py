"""docs/cli.md is generated from the app; this fails when someone changes a command and not the doc."""

from pathlib import Path

from deepspec_cli.docgen import render_cli_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date():
    assert DOC.is_file(), "docs/cli.md is missing: python -m deepspec_cli.docgen > docs/cli.md"
    assert DOC.read_text() == render_cli_reference(), "docs/cli.md is stale: python -m deepspec_cli.docgen > docs/cli.md"


def test_reference_lists_every_command():
    text = render_cli_reference()
    for cmd in ("deepspec spec show", "deepspec data regen", "deepspec data cache", "deepspec train", "deepspec eval",
                "deepspec compare", "deepspec demo", "deepspec target import"):
        assert f"`{cmd}`" in text
