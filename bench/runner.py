"""Executing a grid: which runs to do and how they are stacked (`bench.grid.stacks`), the tasks they make
(`bench.tasks`: one stack end to end), handed to an executor (`bench.executors`: where they run)."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from bench import interrupts
from bench.errors import UserError
from bench.executors.local import LocalExecutor
from bench.executors.slurm import SlurmOptions
from bench.grid.config import RunConfig
from bench.grid.files import load_grid
from bench.grid.stacks import parse_stack, plan_stacks
from bench.progress import GridProgress
from bench.rows import write_row
from bench.storage import ResultsLayout
from bench.tasks import RunTask, execute_task, lost_task_rows, pick_device
from vae_core.data import DataError, MissingDataError, check_data_dir, load_dataset, offline_from_env

FINISHED = ("completed", "diverged")  # re-running skips these; "failed" runs are retried


def finished_row(layout: ResultsLayout, run_id: str) -> dict | None:
    """The run's row when it exists with a finished status, else None."""
    path = layout.run(run_id)
    if not path.exists():
        return None
    try:
        row = pd.read_parquet(path).iloc[0].to_dict()
    except Exception:
        return None
    return row if row.get("status") in FINISHED else None


def pending_runs(runs: list[RunConfig], layout: ResultsLayout) -> tuple[list[RunConfig], list[RunConfig]]:
    """(to do, already finished): a run is finished when its row exists with a finished status."""
    todo, done = [], []
    for cfg in runs:
        (todo if finished_row(layout, cfg.run_id) is None else done).append(cfg)
    return todo, done


def lost_job_rows(layout: ResultsLayout, task: RunTask, err: BaseException) -> list[dict]:
    """The rows of a Slurm job that returned none: the finished rows its runs wrote before it ended, and a
    'failed' row, written here, for each other run."""
    rows = []
    for row in lost_task_rows(task, err):
        written = finished_row(layout, row["run_id"])
        if written is None:
            write_row(row, layout)
        rows.append(written or row)
    return rows


def ensure_datasets(names: set[str], data_dir: Path | None, offline: bool) -> None:
    """Load each dataset once, downloading what is missing into the cache unless `offline` (or $VAEBENCH_OFFLINE);
    raises the data's own one-line error."""
    allow = not (offline or offline_from_env())
    for name in sorted(names):
        try:
            load_dataset(name, data_dir, download=allow)
        except MissingDataError as err:
            if allow:
                raise
            raise MissingDataError(f"{err} (offline: --offline or VAEBENCH_OFFLINE=1 forbids the download)") from None


def data_problem(names: list[str], data_dir: str | None) -> str:
    """'' if every dataset loads here (run on each Ray node before dispatching), else the data's message."""
    try:
        for name in names:
            load_dataset(name, data_dir)
    except DataError as err:
        return f"cannot load the data: {err}"
    return ""


EXECUTORS = ("local", "ray", "slurm")


def remote_device(executor: str, device: str, gpus: float, gpus_flag: str, example: str) -> str:
    """The device of a Ray task or Slurm job with `gpus` GPUs: cuda with GPUs, else cpu."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda; got {device!r}")
    if device == "cuda" and not gpus:
        raise UserError(f"--device cuda with --executor {executor} needs {gpus_flag} ({example})")
    if device == "cpu" and gpus:
        raise UserError(f"--device cpu and {gpus_flag} contradict each other")
    return "cuda" if gpus else "cpu"


def executor_device(executor: str, device: str, jobs: int, ray_address: str | None, cpus_per_run: float | None,
                    gpus_per_run: float | None, slurm: SlurmOptions = SlurmOptions()) -> str:
    """Check the executor options together; returns the device the runs use."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor must be local, ray or slurm; got {executor!r}")
    ray_given = [n for n, v in (("--ray-address", ray_address), ("--cpus-per-run", cpus_per_run),
                                ("--gpus-per-run", gpus_per_run)) if v is not None]
    if executor != "ray" and ray_given:
        raise UserError(f"{', '.join(ray_given)} only apply with --executor ray")
    if executor != "slurm" and slurm.given():
        raise UserError(f"{', '.join(slurm.given())} only apply with --executor slurm")
    if executor == "local":
        return pick_device(device)
    if jobs != 1:
        raise UserError(f"--jobs is for --executor local; with {executor}, "
                        + ("--cpus-per-run and --gpus-per-run set how many tasks share a node" if executor == "ray"
                           else "each stack is one Slurm job and --slurm-cpus/--slurm-gpus size it"))
    if executor == "slurm":
        slurm.check()
        return remote_device(executor, device, slurm.gpus or 0, "--slurm-gpus", "e.g. 1")
    cpus, gpus = 1.0 if cpus_per_run is None else cpus_per_run, gpus_per_run or 0.0
    if not cpus > 0:
        raise UserError(f"--cpus-per-run must be > 0; got {cpus:g}")
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise UserError(f"--gpus-per-run must be a fraction in [0, 1] or a whole number; got {gpus:g}")
    return remote_device(executor, device, gpus, "--gpus-per-run", "e.g. 1, or 0.25 to share a GPU")


def run_grid_command(grid: Path, results: Path, data_dir: Path | None, device: str, jobs: int,
                     dry_run: bool, stack: str = "auto", executor: str = "local", ray_address: str | None = None,
                     cpus_per_run: float | None = None, gpus_per_run: float | None = None,
                     offline: bool = False, slurm: SlurmOptions = SlurmOptions()) -> int:
    """`vaebench run`: validate everything first (downloading missing data unless offline), then run what is not
    finished. Returns the exit code."""
    check_data_dir(data_dir)
    dev = executor_device(executor, device, jobs, ray_address, cpus_per_run, gpus_per_run, slurm)
    runs = load_grid(grid)
    stack_size = parse_stack(stack)
    layout = ResultsLayout(results)
    progress = GridProgress(sys.stdout)
    todo, done = pending_runs(runs, layout)
    plans = plan_stacks(todo, stack_size, dev)
    if dry_run:
        progress.run_table(runs, {c.run_id for c in done}, plans)
        return 0
    datasets = {c.data.dataset for c in todo}
    ensure_datasets(datasets, data_dir, offline)  # fail before any run starts
    if results.exists() and not results.is_dir():
        raise UserError(f"results path {results} exists and is not a folder")
    if executor == "ray":
        threads = max(1, int(cpus_per_run or 1))
    elif executor == "slurm":
        threads = slurm.cpus or 1
    else:
        cores = os.cpu_count() or 1
        threads = max(1, cores // jobs) if dev == "cpu" else max(1, torch.get_num_threads())
    tasks = [RunTask(p.configs, str(results), str(data_dir) if data_dir else None, dev, threads, p.stack_id, executor)
             for p in plans]
    driver_writes = executor == "ray"  # a retried or cancelled Ray task leaves no row; Slurm jobs write their own
    failed = 0
    try:
        with ExitStack() as resources:
            resources.enter_context(interrupts.catching())
            if executor == "ray" and tasks:
                from bench.executors.ray import RayExecutor

                pool = resources.enter_context(RayExecutor(
                    ray_address or os.environ.get("RAY_ADDRESS") or None, cpus_per_run or 1.0, gpus_per_run or 0.0,
                    on_lost=lost_task_rows))
                pool.check_nodes(results, partial(data_problem, sorted(datasets), tasks[0].data_dir))
            elif executor == "slurm" and tasks:
                from bench.executors.slurm import SlurmExecutor

                pool = SlurmExecutor(layout.root / "slurm", slurm, on_lost=partial(lost_job_rows, layout))
            else:
                pool = LocalExecutor(jobs, on_progress=progress.run_callback)
            results_stream = resources.enter_context(closing(pool.map(partial(execute_task, write=not driver_writes),
                                                                      tasks)))  # Slurm: submitted here
            if executor != "local" and tasks:
                progress.say(pool.describe())
            progress.start(total=len(runs), skipped=len(done), stacks=len(plans))
            for rows in results_stream:
                for row in rows:
                    if driver_writes:
                        write_row(row, layout)
                    failed += row["status"] == "failed"
                    progress.finished(row)
    except KeyboardInterrupt:
        progress.stop()
        progress.say(f"interrupted: completed runs are kept in {results}; re-run the same command to resume")
        return 130
    progress.stop()
    progress.summary(failed)
    progress.where(results)
    return 1 if failed else 0
