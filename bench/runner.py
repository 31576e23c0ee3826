"""Executing a grid: which runs to do, one run end to end (train -> test -> one result row), and the
executor that runs them. `Executor` is the one seam a remote (e.g. Ray) backend replaces."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import pandas as pd
import torch

from bench.config import RunConfig
from bench.errors import UserError
from bench.gridfile import load_grid
from bench.progress import GridProgress
from bench.quiet import quiet_torch
from bench.storage import ResultsLayout, write_parquet
from bench.train import ProgressFn, Run, RunData
from vae_core.data import DataError, MissingDataError, binarize, check_data_dir, load_dataset, offline_from_env

FINISHED = ("completed", "diverged")  # re-running skips these; "failed" runs are retried


@dataclass(frozen=True)
class RunTask:
    """Everything one run needs, picklable (sent to a worker process or, later, a remote worker)."""

    config: RunConfig
    results: str
    data_dir: str | None
    device: str
    threads: int


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


def execute_run(task: RunTask, on_progress: ProgressFn | None = None) -> dict:
    """Train and test one run and write its row; exceptions become a 'failed' row. Returns the row."""
    cfg, layout = task.config, ResultsLayout(task.results)
    quiet_torch()
    torch.set_num_threads(task.threads)
    device = torch.device(task.device)
    started = datetime.now(timezone.utc)
    wall0 = time.perf_counter()
    row: dict = {"status": "failed", "error": "", "first_bad_step": math.nan}
    run = None
    try:
        data = prepare_data(cfg, task.data_dir, device)
        row["data_digest"], row["eval_images"] = data.digest, data.test.shape[0]
        run = Run(cfg, data, layout, device, on_progress)
        resumed = run.load_state()
        row["resumed_from_step"] = run.step if resumed else 0
        status = run.train()
        row["status"] = status
        if status == "diverged":
            row["first_bad_step"] = run.first_bad_step
        else:
            test = run.test()
            row.update(test_elbo=test["elbo"], test_iw_log_px=test["iw_log_px"],
                       test_reconstruction=test["reconstruction"], test_kl=test["kl"])
    except DataError as err:
        row["error"] = str(err)
    except Exception as err:  # a run's failure is recorded; the grid goes on
        row["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
        row["traceback"] = traceback.format_exc()[-2000:]
    if run is not None:
        row.update(steps_done=run.step, best_step=run.best["step"], val_elbo=run.best["elbo"],
                   val_iw_log_px=run.best["iw_log_px"], train_seconds=run.train_seconds,
                   eval_seconds=run.eval_seconds,
                   train_examples_per_s=run.step * cfg.train.batch_size / run.train_seconds
                   if run.train_seconds else math.nan,
                   compiled=run.fns.compiled, compile_error=run.compile_error,
                   compile_seconds=run.compile_seconds)
    row = result_row(cfg, row, device, started, time.perf_counter() - wall0, task.threads)
    write_parquet(pd.DataFrame([row]), layout.run(cfg.run_id))
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
        "compiled": False, "compile_error": "", "compile_seconds": 0.0,
        **figures,
        "wall_seconds": wall,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": threads, "torch_version": torch.__version__, "git_commit": git_commit(),
        "config_hash": cfg.config_hash, "started_at": started,
        "finished_at": datetime.now(timezone.utc),
        **{k: (str(v) if isinstance(v, list) else v) for k, v in cfg.flat().items()},
    }
    return row


class Executor(Protocol):
    """Runs tasks, yielding each finished run's row as it completes."""

    def map(self, fn: Callable[[RunTask], dict], tasks: Sequence[RunTask]) -> Iterator[dict]: ...


class LocalExecutor:
    """In this process (jobs = 1, with live progress) or in `jobs` worker processes."""

    def __init__(self, jobs: int = 1, on_progress: Callable[[RunTask], ProgressFn] | None = None):
        self.jobs, self.on_progress = jobs, on_progress

    def map(self, fn, tasks):
        if self.jobs == 1:
            for task in tasks:
                yield fn(task, self.on_progress(task) if self.on_progress else None)
            return
        with ProcessPoolExecutor(self.jobs) as pool:
            futures = [pool.submit(fn, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                raise


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


def run_grid_command(grid: Path, results: Path, data_dir: Path | None, device: str, jobs: int,
                     dry_run: bool, offline: bool = False) -> int:
    """`vaebench run`: validate everything first (downloading missing data unless offline), then run what is not
    finished. Returns the exit code."""
    check_data_dir(data_dir)
    runs = load_grid(grid)
    dev = pick_device(device)
    layout = ResultsLayout(results)
    progress = GridProgress(sys.stdout)
    todo, done = pending_runs(runs, layout)
    if dry_run:
        progress.run_table(runs, {c.run_id for c in done})
        return 0
    ensure_datasets({c.data.dataset for c in todo}, data_dir, offline)  # fail before any run starts
    if results.exists() and not results.is_dir():
        raise UserError(f"results path {results} exists and is not a folder")
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs) if dev == "cpu" else max(1, torch.get_num_threads())
    tasks = [RunTask(c, str(results), str(data_dir) if data_dir else None, dev, threads) for c in todo]
    progress.start(total=len(runs), skipped=len(done))
    failed = 0
    try:
        executor = LocalExecutor(jobs, on_progress=progress.run_callback)
        for row in executor.map(execute_run, tasks):
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
