"""Generate the CLI reference (docs/cli.md) from the typer app itself.

`python -m deepspec_cli.docgen > docs/cli.md` regenerates it; a test fails when the file is stale.
"""

from __future__ import annotations

from typing import Any

import typer.main

from deepspec_cli.main import app


def _is_argument(p: Any) -> bool:
    return p.param_type_name == "argument"


def _param_row(p: Any) -> str:
    if _is_argument(p):
        name = f"`{p.name.upper()}`"
        kind = "argument"
    else:
        names = list(p.opts) + [f"{o}" for o in p.secondary_opts]
        name = ", ".join(f"`{n}`" for n in names)
        kind = "flag" if getattr(p, "is_flag", False) else "option"
    help_text = (getattr(p, "help", None) or "").replace("|", "\\|").replace("\n", " ")
    default = p.default if not callable(p.default) else None
    shown = "" if default in (None, (), [], False) or _is_argument(p) else f" (default: `{default}`)"
    req = " **required**" if p.required and not _is_argument(p) else ""
    return f"| {name} | {kind} | {help_text}{shown}{req} |"


def _render(cmd: Any, path: list[str], out: list[str]) -> None:
    if path:
        out.append(f"{'#' * min(len(path) + 1, 4)} `deepspec {' '.join(path)}`\n")
        doc = (cmd.help or "").strip()
        if doc:
            out.append(doc.split("\n\n")[0] + "\n")
        params = [p for p in cmd.params if p.name not in ("help",) and not getattr(p, "hidden", False)]
        if params and not hasattr(cmd, "commands"):
            out.append("| name | kind | description |\n|---|---|---|")
            out.extend(_param_row(p) for p in params)
            out.append("")
    if hasattr(cmd, "commands"):
        for name in sorted(cmd.commands):
            _render(cmd.commands[name], [*path, name], out)


def render_cli_reference() -> str:
    root = typer.main.get_command(app)
    out = [
        "# CLI reference",
        "",
        "Generated from the command definitions by `python -m deepspec_cli.docgen > docs/cli.md`;",
        "a test fails when this file is stale. Every command also prints its help with `--help`.",
        "",
        (root.help or "").strip(),
        "",
    ]
    _render(root, [], out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_cli_reference(), end="")
