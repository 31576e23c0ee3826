"""`vaebench report`: tables and plots from a results folder (`bench.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.commands import DataDir, Offline, user_errors
from bench.errors import UserError


def command(
    results: Path = typer.Option(Path("results"), "--results", help="Results folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RESULTS/report)."),
    data_dir: Optional[Path] = DataDir,
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Reference variant of the versus table "
                                                                    "(default: mean-field if present, else the "
                                                                    "first variant)."),
    cost: str = typer.Option("flops", "--cost", help="The versus figures' cost axis: flops (counted, what a "
                                                     "shared machine cannot distort) or seconds (measured)."),
    offline: bool = Offline,
) -> None:
    """Tables and plots from a results folder (report.md, PNG and PDF figures)."""
    from bench.report import make_report
    from vae_core.data import offline_from_env

    with user_errors():
        if cost not in ("flops", "seconds"):
            raise UserError(f"--cost must be flops or seconds; got {cost!r}")
        download = not (offline or offline_from_env())
        make_report(results, out or results / "report", data_dir, baseline=baseline, download=download, cost=cost)
