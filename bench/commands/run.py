"""`vaebench run`: train and evaluate a grid (`bench.runner`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.commands import DataDir, Offline, user_errors


def command(
    grid: Path = typer.Option(..., "--grid", help="Grid file (TOML)."),
    results: Path = typer.Option(Path("results"), "--results", help="Results folder."),
    data_dir: Optional[Path] = DataDir,
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Runs in parallel (threads are split between them)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded run table and the stacks, and exit."),
    stack: str = typer.Option("auto", "--stack",
                              help="Runs trained together as one stacked model: auto | N (1 = one at a time)."),
    executor: str = typer.Option("local", "--executor", help="local | ray (runs as Ray tasks on a cluster)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster to attach to (else $RAY_ADDRESS, else a local instance)."),
    cpus_per_run: Optional[float] = typer.Option(None, "--cpus-per-run",
                                                 help="Ray: CPUs per task, a stack or a run (default 1)."),
    gpus_per_run: Optional[float] = typer.Option(
        None, "--gpus-per-run", help="Ray: GPUs per task, fractions share a GPU (default 0)."),
    offline: bool = Offline,
) -> None:
    """Train and evaluate every run of a grid; completed runs are skipped, interrupted ones resume.
    Missing data is downloaded into the cache first, unless offline."""
    from bench.runner import run_grid_command

    with user_errors():
        code = run_grid_command(grid, results, data_dir, device, jobs, dry_run, stack, executor, ray_address,
                                cpus_per_run, gpus_per_run, offline)
    raise typer.Exit(code)
