"""Entry point of the ``deepspec`` command. Command groups are registered explicitly here."""

from __future__ import annotations

import typer

from deepspec_cli import (
    compare_cmd,
    data_cmd,
    demo_cmd,
    eval_cmd,
    export_cmd,
    spec_cmd,
    target_cmd,
    train_cmd,
)
from deepspec_core import __version__

app = typer.Typer(
    name="deepspec",
    help="Train and evaluate speculative-decoding draft models (Eagle3, DFlash, DSpark) for frozen target LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(spec_cmd.app, name="spec")
app.add_typer(target_cmd.app, name="target")
app.add_typer(data_cmd.app, name="data")
app.command("compare")(compare_cmd.compare_command)
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.eval_command)
app.command("export")(export_cmd.export_command)
app.command("demo")(demo_cmd.demo_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deepspec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """deepspec: data → cache → train → eval → compare."""


def main() -> None:
    app()


if __name__ == "__main__":  # `python -m deepspec_cli.main` (how launchers start each process)
    main()
