"""`vaebench gaps`: inference gaps of finished runs, written into their rows (`bench.finished_gaps`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.commands import DataDir, user_errors


def command(
    results: Path = typer.Option(Path("results"), "--results", help="Results folder."),
    data_dir: Optional[Path] = DataDir,
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Inference gaps (approximation, amortization) and posterior diagnostics of finished runs, written into
    their rows; runs that have them are skipped, so an interrupted command resumes."""
    from bench.finished_gaps import gaps_command

    with user_errors():
        code = gaps_command(results, data_dir, device)
    raise typer.Exit(code)
