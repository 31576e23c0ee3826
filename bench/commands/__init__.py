"""One module per `vaebench` command: each parses its options and delegates (`bench.cli` assembles the app).

The options two commands share, and `user_errors`: a user's mistake (UserError, ConfigError, DataError) is one
red line on stderr and exit 2.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from bench.errors import UserError
from vae_core.config import ConfigError

err_console = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Folder with the datasets (else $VAEBENCH_DATA, else the cache); "
                                                "must exist.")
Offline = typer.Option(False, "--offline", help="Never download missing data (also: VAEBENCH_OFFLINE=1).")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A user error raised inside is printed as one line and becomes exit 2."""
    from vae_core.data import DataError

    try:
        yield
    except (UserError, ConfigError, DataError) as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
