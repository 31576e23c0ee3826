"""Executing a grid: which runs to do and how they are stacked (`bench.stacking`), one task end to end
(a stack of runs: train -> test -> one result row per run), and handing tasks to an executor
(`bench.executors`: where they run)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from bench.config import RunConfig
from bench.errors import UserError
from bench.executors.local import LocalExecutor
from bench.gridfile import load_grid
from bench.progress import GridProgress
from bench.stacking import StackPlan, parse_stack, plan_stacks
from bench.storage import ResultsLayout, write_parquet
from bench.train import ProgressFn, Run, RunData, Stack
from vae_core.data import DataError, binarize, load_dataset

FINISHED = ("completed", "diverged")  # re-running skips these; "failed" runs are retried


@dataclass(frozen=True)
class RunTask:
    """Everything one stack of runs needs (one run when unstacked), picklable for worker processes."""

    configs: tuple[RunConfig, ...]
    results: str
    data_dir: str | None
    device: str
    threads: int
    stack_id: str

    @property
    def max_steps(self) -> int:
        return self.configs[0].train.max_steps


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda; got {requested!r}")
    return requested


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def eval_subset(x: torch.Tensor, max_images: int, seed: int) -> torch.Tensor:
    """A fixed seeded random subset (the binarized test file is sorted by digit: never the first N rows)."""
    if not max_images or max_images >= x.shape[0]:
        return x
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_images]
    return x[idx]


def prepare_data(cfg: RunConfig, data_dir: str | None, device: torch.device) -> RunData:
    ds = load_dataset(cfg.data.dataset, data_dir)
    d = cfg.data
    valid = eval_subset(ds.valid, d.max_eval_images, d.eval_subset_seed)
    test = eval_subset(ds.test, d.max_eval_images, d.eval_subset_seed)
    if ds.dynamic:  # evaluation sets are binarized once, with a fixed seed, identically for every run
        gen = torch.Generator().manual_seed(d.eval_subset_seed)
        valid, test = binarize(valid, gen), binarize(test, gen)
    return RunData(train=ds.train.to(device), valid=valid.to(device), test=test.to(device),
                   dynamic=ds.dynamic, digest=ds.digest)


def execute_task(task: RunTask, on_progress: ProgressFn | None = None) -> list[dict]:
    """Train and test the runs of one task (a stack) and write each run's row as that run finishes.

    An exception fails the runs not yet finished (their rows say why); finished rows stay. Returns the rows.
    """
    layout = ResultsLayout(task.results)
    torch.set_num_threads(task.threads)
    device = torch.device(task.device)
    started, wall0 = datetime.now(timezone.utc), time.perf_counter()
    rows: list[dict] = []
    stack = data = None

    def write_row(cfg: RunConfig, figures: dict) -> None:
        row = result_row(cfg, {"stack_id": task.stack_id, "stack_size": len(task.configs), **figures}, device,
                         started, time.perf_counter() - wall0, task.threads)
        write_parquet(pd.DataFrame([row]), layout.run(cfg.run_id))
        rows.append(row)

    error: dict = {}
    try:
        data = prepare_data(task.configs[0], task.data_dir, device)
        stack = Stack(list(task.configs), data, layout, device, on_progress)
        stack.load_states()
        for run, test in stack.run():
            write_row(run.cfg, run_figures(run, stack, data, test))
    except DataError as err:
        error = {"error": str(err)}
    except Exception as err:  # a run's failure is recorded; the grid goes on
        error = {"error": f"{type(err).__name__}: {err}".splitlines()[0], "traceback": traceback.format_exc()[-2000:]}
    done = {row["run_id"] for row in rows}
    for i, cfg in enumerate(task.configs):
        if cfg.run_id not in done:
            figures = run_figures(stack.runs[i], stack, data, None) if stack is not None else {}
            write_row(cfg, {**figures, "status": "failed", **error})
    return rows


def execute_run(task: RunTask, on_progress: ProgressFn | None = None) -> dict:
    """`execute_task` for a task of one run: its row."""
    (row,) = execute_task(task, on_progress)
    return row


def run_figures(run: Run, stack: Stack, data: RunData | None, test: dict | None) -> dict:
    """A run's figures for its result row: status, training/validation/test figures, timing, compile flags."""
    t = run.cfg.train
    row = {"status": "diverged" if run.status == "diverged" else "completed",
           "error": "", "first_bad_step": run.first_bad_step if run.status == "diverged" else math.nan,
           "resumed_from_step": run.resumed_from_step, "steps_done": run.step, "best_step": run.best["step"],
           "val_elbo": run.best["elbo"], "val_iw_log_px": run.best["iw_log_px"],
           "train_seconds": run.train_seconds, "eval_seconds": run.eval_seconds,
           "train_examples_per_s": run.step * t.batch_size / run.train_seconds if run.train_seconds else math.nan,
           "compiled": stack.fns.step_compiled, "compile_error": stack.fns.compile_error,
           "compile_seconds": run.compile_seconds}
    if data is not None:
        row.update(data_digest=data.digest, eval_images=data.test.shape[0])
    if test is not None:
        row.update(test_elbo=test["elbo"], test_iw_log_px=test["iw_log_px"],
                   test_reconstruction=test["reconstruction"], test_kl=test["kl"])
    return row


def result_row(cfg: RunConfig, figures: dict, device: torch.device, started: datetime, wall: float,
               threads: int) -> dict:
    """The flat result row: identity, main config values, figures, provenance, every dotted config key."""
    m, t = cfg.model, cfg.train
    nan_cols = ("steps_done", "best_step", "val_elbo", "val_iw_log_px", "test_elbo", "test_iw_log_px",
                "test_reconstruction", "test_kl", "train_examples_per_s", "train_seconds", "eval_seconds",
                "eval_images")
    row = {
        "run_id": cfg.run_id, "grid": cfg.grid, "variant": cfg.variant, "posterior": m.posterior,
        "prior": m.prior, "architecture": m.architecture, "latent_dim": m.latent_dim, "lr": t.lr,
        "seed": t.seed, "optimizer": t.optimizer, "batch_size": t.batch_size, "max_steps": t.max_steps,
        **{c: math.nan for c in nan_cols},
        "iw_samples": cfg.eval.iw_samples, "data_digest": "",
        "compiled": False, "compile_error": "", "compile_seconds": 0.0, "stack_id": cfg.run_id, "stack_size": 1,
        **figures,
        "wall_seconds": wall,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": threads, "torch_version": torch.__version__, "git_commit": git_commit(),
        "config_hash": cfg.config_hash, "started_at": started,
        "finished_at": datetime.now(timezone.utc),
        **{k: (str(v) if isinstance(v, list) else v) for k, v in cfg.flat().items()},
    }
    return row


def pending_runs(runs: list[RunConfig], layout: ResultsLayout) -> tuple[list[RunConfig], list[RunConfig]]:
    """(to do, already finished): a run is finished when its row exists with a finished status."""
    todo, done = [], []
    for cfg in runs:
        path = layout.run(cfg.run_id)
        finished = False
        if path.exists():
            try:
                finished = pd.read_parquet(path, columns=["status"])["status"].iloc[0] in FINISHED
            except Exception:
                finished = False
        (done if finished else todo).append(cfg)
    return todo, done


def run_grid_command(grid: Path, results: Path, data_dir: Path | None, device: str, jobs: int,
                     dry_run: bool, stack: str = "auto") -> int:
    """`vaebench run`: validate everything first, then run what is not finished. Returns the exit code."""
    runs = load_grid(grid)
    dev = pick_device(device)
    stack_size = parse_stack(stack)
    layout = ResultsLayout(results)
    progress = GridProgress(sys.stdout)
    todo, done = pending_runs(runs, layout)
    plans = plan_stacks(todo, stack_size, dev)
    if dry_run:
        progress.run_table(runs, {c.run_id for c in done}, plans)
        return 0
    datasets = {c.data.dataset for c in todo}
    for name in sorted(datasets):
        load_dataset(name, data_dir)  # fail before any run starts, with the data's own message
    if results.exists() and not results.is_dir():
        raise UserError(f"results path {results} exists and is not a folder")
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs) if dev == "cpu" else max(1, torch.get_num_threads())
    tasks = [task_for(plan, results, data_dir, dev, threads) for plan in plans]
    progress.start(total=len(runs), skipped=len(done), stacks=len(plans))
    failed = 0
    try:
        executor = LocalExecutor(jobs, on_progress=progress.run_callback)
        for rows in executor.map(execute_task, tasks):
            for row in rows:
                failed += row["status"] == "failed"
                progress.finished(row)
    except KeyboardInterrupt:
        progress.stop()
        progress.say(f"interrupted: completed runs are kept in {results}; re-run the same command to resume")
        return 130
    progress.stop()
    progress.summary(failed)
    return 1 if failed else 0


def task_for(plan: StackPlan, results: Path, data_dir: Path | None, device: str, threads: int) -> RunTask:
    return RunTask(plan.configs, str(results), str(data_dir) if data_dir else None, device, threads, plan.stack_id)
