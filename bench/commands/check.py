"""`vaebench check posterior|prior NAME`: the family contract (`vae_core.contract`) as a table; exit 1 on a failure."""

from __future__ import annotations

from typing import TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.commands import user_errors
from bench.errors import UserError
from vae_core.contract import CHECKS, Check
from vae_core.registry import resolve

MARKS = {True: "[green]pass[/]", False: "[bold red]FAIL[/]", None: "[yellow]note[/]"}


def check_table(kind: str, name: str, origin: str, checks: list[Check]) -> Table:
    table = Table(title=escape(f"{kind} {name!r} ({origin})"), title_justify="left")
    for column in ("check", "measured", "bound", "result"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(escape(c.name), escape(c.value), escape(c.bound), MARKS[c.passed])
    return table


def run_check(kind: str, name: str, compile: bool = False, out: TextIO | None = None) -> int:
    """Print the table of `kind` `name`'s checks; 0 if none failed, else 1. A name that does not resolve raises
    the registry's ConfigError (exit 2)."""
    if kind not in CHECKS:
        raise UserError(f"check what? 'posterior' or 'prior'; got {kind!r}")
    origin = resolve(kind, name).origin
    checks = CHECKS[kind](name, compile=compile)
    console = Console(file=out, width=160, highlight=False)
    console.print(check_table(kind, name, origin, checks))
    failed = [c.name for c in checks if c.passed is False]
    console.print(f"[bold red]{len(failed)} of {len(checks)} checks failed[/]: {escape(', '.join(failed))}" if failed else
                  f"[green]all {sum(c.passed is True for c in checks)} checks passed[/]"
                  + (f" ({sum(c.passed is None for c in checks)} notes)" if any(c.passed is None for c in checks)
                     else ""))
    return 1 if failed else 0


def command(
    kind: str = typer.Argument(..., help="posterior | prior"),
    name: str = typer.Argument(..., help="A built-in, an installed plugin's name, or 'module.path:ClassName'."),
    compile: bool = typer.Option(False, "--compile", help="Also check compiled = eager (~10-30 s on a CPU)."),
) -> None:
    """Run the family contract on a posterior family or a prior: a table of checks; exit 1 if one fails."""
    with user_errors():
        code = run_check(kind, name, compile)
    raise typer.Exit(code)
