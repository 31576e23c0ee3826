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
    executor: str = typer.Option("local", "--executor",
                                 help="local | ray (Ray tasks on a cluster) | slurm (a Slurm job array, submitit)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster to attach to (else $RAY_ADDRESS, else a local instance)."),
    cpus_per_run: Optional[float] = typer.Option(None, "--cpus-per-run",
                                                 help="Ray: CPUs per task, a stack or a run (default 1)."),
    gpus_per_run: Optional[float] = typer.Option(
        None, "--gpus-per-run", help="Ray: GPUs per task, fractions share a GPU (default 0)."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition",
                                                  help="Slurm: partition of the jobs (default: the cluster's)."),
    slurm_time: Optional[int] = typer.Option(None, "--slurm-time",
                                             help="Slurm: time limit per job in minutes (default 60; a job that "
                                                  "reaches it is requeued and resumes)."),
    slurm_gpus: Optional[int] = typer.Option(None, "--slurm-gpus", help="Slurm: GPUs per job (default 0)."),
    slurm_cpus: Optional[int] = typer.Option(None, "--slurm-cpus",
                                             help="Slurm: CPUs per job, also its torch threads (default 1)."),
    offline: bool = Offline,
) -> None:
    """Train and evaluate every run of a grid; completed runs are skipped, interrupted ones resume.
    Missing data is downloaded into the cache first, unless offline."""
    from bench.executors.slurm import SlurmOptions
    from bench.runner import run_grid_command

    with user_errors():
        code = run_grid_command(grid, results, data_dir, device, jobs, dry_run, stack, executor, ray_address,
                                cpus_per_run, gpus_per_run, offline,
                                SlurmOptions(slurm_partition, slurm_time, slurm_gpus, slurm_cpus))
    raise typer.Exit(code)
