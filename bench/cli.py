"""`vaebench` command line: parses arguments and delegates; no logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from bench.errors import UserError
from vae_core.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark VAE posteriors and priors: train grids, record nats and speed, report.")
err_console = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Folder with the datasets (else $VAEBENCH_DATA, else the cache); "
                                                "must exist.")
Offline = typer.Option(False, "--offline", help="Never download missing data (also: VAEBENCH_OFFLINE=1).")


def _user_error(err: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _data_error_types() -> tuple[type[Exception], ...]:
    from vae_core.data import DataError

    return (UserError, ConfigError, DataError)


@app.command()
def run(
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

    try:
        code = run_grid_command(grid, results, data_dir, device, jobs, dry_run, stack, executor, ray_address,
                                cpus_per_run, gpus_per_run, offline)
    except _data_error_types() as err:
        _user_error(err)
    raise typer.Exit(code)


@app.command()
def report(
    results: Path = typer.Option(Path("results"), "--results", help="Results folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RESULTS/report)."),
    data_dir: Optional[Path] = DataDir,
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Reference variant of the versus table "
                                                                    "(default: mean-field if present, else the "
                                                                    "first variant)."),
    offline: bool = Offline,
) -> None:
    """Tables and plots from a results folder (report.md, PNG and PDF figures)."""
    from bench.report import make_report
    from vae_core.data import offline_from_env

    try:
        download = not (offline or offline_from_env())
        make_report(results, out or results / "report", data_dir, baseline=baseline, download=download)
    except _data_error_types() as err:
        _user_error(err)


@app.command()
def gaps(
    results: Path = typer.Option(Path("results"), "--results", help="Results folder."),
    data_dir: Optional[Path] = DataDir,
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Inference gaps (approximation, amortization) and posterior diagnostics of finished runs, written into
    their rows; runs that have them are skipped, so an interrupted command resumes."""
    from bench.gaps_command import gaps_command

    try:
        code = gaps_command(results, data_dir, device)
    except _data_error_types() as err:
        _user_error(err)
    raise typer.Exit(code)


@app.command()
def data(
    data_dir: Optional[Path] = DataDir,
    download: bool = typer.Option(False, "--download", help="Download what is missing (needs internet)."),
) -> None:
    """List the datasets: where each was found, split sizes, pixel means, checksum status."""
    from bench.data_command import show_data

    try:
        code = show_data(data_dir, download)
    except _data_error_types() as err:
        _user_error(err)
    raise typer.Exit(code)


@app.command()
def check(
    kind: str = typer.Argument(..., help="posterior | prior"),
    name: str = typer.Argument(..., help="A built-in, an installed plugin's name, or 'module.path:ClassName'."),
    compile: bool = typer.Option(False, "--compile", help="Also check compiled = eager (~10-30 s on a CPU)."),
) -> None:
    """Run the family contract on a posterior family or a prior: a table of checks; exit 1 if one fails."""
    from bench.check_command import run_check

    try:
        code = run_check(kind, name, compile)
    except _data_error_types() as err:
        _user_error(err)
    raise typer.Exit(code)


@app.command()
def bench() -> None:
    """Speed checks: train-step and IW-evaluation throughput per family vs. a plain baseline."""
    import pytest

    raise typer.Exit(pytest.main(["-q", "--benchmark-only", "tests/benchmarks"]))


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
