"""`deepspec spec`: show and check run specs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.syntax import Syntax

from deepspec_cli.console import make_console
from deepspec_cli.errors import handle_errors
from deepspec_core import presets
from deepspec_core.spec import check_registered, load_spec, spec_to_toml

app = typer.Typer(help="Show and check run specs (presets or TOML files).", no_args_is_help=True)
console = make_console()

SET_HELP = "Override a field: --set train.lr=3e-4 (value parsed as TOML). Repeatable."


@app.command("show")
@handle_errors
def show(
    spec: str = typer.Argument(..., help="Preset name or TOML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    plain: bool = typer.Option(False, "--plain", help="Print plain TOML without colour (for redirecting)."),
) -> None:
    """Print the resolved spec as TOML (it loads back to an equal spec)."""
    text = spec_to_toml(load_spec(spec, set_))
    if plain or not console.is_terminal:
        typer.echo(text, nl=False)
    else:
        console.print(Syntax(text, "toml", theme="ansi_dark", background_color="default"))


@app.command("check")
@handle_errors
def check(
    spec: Path = typer.Argument(..., help="TOML spec file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Validate a spec file; exit code 2 and one line naming the field when it is invalid."""
    resolved = load_spec(str(spec), set_)
    check_registered(resolved)
    console.print(f"[green]ok[/] {spec}: {resolved.draft.algo} draft for target {resolved.target.model}")


@app.command("presets")
def list_presets() -> None:
    """List the built-in presets."""
    for name in presets.names():
        typer.echo(name)
