"""Executing a grid: which runs to do and how they are stacked (`bench.stacking`), one task end to end
(a stack of runs: train -> test -> one result row per run), and handing tasks to an executor
(`bench.executors`: where they run)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import traceback
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from bench.config import DataConfig, RunConfig
from bench.errors import UserError
from bench.executors.local import LocalExecutor
from bench.gaps import gap_figures
from bench.gridfile import load_grid
from bench.progress import GridProgress
from bench.stacking import parse_stack, plan_stacks
from bench.quiet import quiet_torch
from bench.storage import ResultsLayout, write_parquet
from bench.train import ProgressFn, Run, RunData, Stack
from vae_core import load_vae
from vae_core.data import DataError, MissingDataError, binarize, check_data_dir, load_dataset, offline_from_env
from vae_core.data.registry import get_spec
from vae_core.registry import origins

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
    executor: str = "local"

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
    gen = torch.Generator(device="cpu").manual_seed(seed)  # drawn on the host: the same subset on every device
    idx = torch.randperm(x.shape[0], generator=gen, device="cpu")[:max_images]
    return x[idx.to(x.device)]


def prepare_data(cfg: RunConfig, data_dir: str | None, device: torch.device) -> RunData:
    ds = load_dataset(cfg.data.dataset, data_dir, split_seed=cfg.data.split_seed)
    d = cfg.data
    expected = get_spec(d.dataset).splits[0]
    if cfg.train.counts_epochs and ds.train.shape[0] != expected:
        raise UserError(f"{d.dataset}: {ds.train.shape[0]} training images, but epochs in the config are counted "
                        f"for {expected}")
    valid, test = eval_sets(ds, d)
    return RunData(train=ds.train.to(device), valid=valid.to(device), test=test.to(device),
                   dynamic=ds.dynamic, digest=ds.digest)


def eval_sets(ds, d: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid, test) images of a loaded dataset as the runs evaluate them: the seeded subsets, binarized once
    with a fixed seed, identically for every run, when the dataset is dynamic."""
    valid = eval_subset(ds.valid, d.max_eval_images, d.eval_subset_seed)
    test = eval_subset(ds.test, d.max_eval_images, d.eval_subset_seed)
    if ds.dynamic:  # on the host with a fixed seed, identically for every run
        gen = torch.Generator(device=valid.device).manual_seed(d.eval_subset_seed)
        valid, test = binarize(valid, gen), binarize(test, gen)
    return valid, test


def execute_task(task: RunTask, on_progress: ProgressFn | None = None, write: bool = True) -> list[dict]:
    """Train and test the runs of one task (a stack); with `write`, each run's row is written as that run
    finishes (else the caller writes the returned rows: a Ray driver does).

    An exception fails the runs not yet finished (their rows say why); finished rows stay. Returns the rows.
    """
    layout = ResultsLayout(task.results)
    quiet_torch()
    torch.set_num_threads(task.threads)
    device = torch.device(task.device)
    started, wall0 = datetime.now(timezone.utc), time.perf_counter()
    rows: list[dict] = []
    stack = data = None

    def record(cfg: RunConfig, figures: dict) -> None:
        row = result_row(cfg, {"stack_id": task.stack_id, "stack_size": len(task.configs), **figures}, device,
                         started, time.perf_counter() - wall0, task.threads, task.executor)
        if write:
            write_row(row, layout)
        rows.append(row)

    error: dict = {}
    try:
        data = prepare_data(task.configs[0], task.data_dir, device)
        stack = Stack(list(task.configs), data, layout, device, on_progress, started=wall0)
        stack.load_states()
        for run, test in stack.run():
            gaps = run_gaps(run.cfg, layout, data.test, device) if test is not None and run.cfg.eval.gaps else {}
            record(run.cfg, {**run_figures(run, stack, data, test), **gaps})  # wall_seconds counts the gaps
    except DataError as err:
        error = {"error": str(err)}
    except Exception as err:  # a run's failure is recorded; the grid goes on
        error = {"error": f"{type(err).__name__}: {err}".splitlines()[0], "traceback": traceback.format_exc()[-2000:]}
    done = {row["run_id"] for row in rows}
    for i, cfg in enumerate(task.configs):
        if cfg.run_id not in done:
            figures = run_figures(stack.runs[i], stack, data, None) if stack is not None else {}
            record(cfg, {**figures, "status": "failed", **error})
    return rows


def run_gaps(cfg: RunConfig, layout: ResultsLayout, test: torch.Tensor, device: torch.device) -> dict:
    """The gap columns of a run (`bench.gaps`), from its checkpoint file: the weights it was tested with."""
    return gap_figures(load_vae(layout.checkpoint(cfg.run_id), map_location=device), test, cfg.eval)


def execute_run(task: RunTask, on_progress: ProgressFn | None = None) -> dict:
    """`execute_task` for a task of one run: its row."""
    (row,) = execute_task(task, on_progress)
    return row


def write_row(row: dict, layout: ResultsLayout) -> None:
    write_parquet(pd.DataFrame([row]), layout.run(row["run_id"]))


def lost_task_rows(task: RunTask, err: BaseException) -> list[dict]:
    """'failed' rows for the runs of a task whose worker returned nothing (it died more often than retries
    allow)."""
    now = datetime.now(timezone.utc)
    figures = {"status": "failed", "error": f"{type(err).__name__}: {err}".splitlines()[0],
               "first_bad_step": math.nan, "stack_id": task.stack_id, "stack_size": len(task.configs)}
    return [{**result_row(cfg, figures, torch.device("cpu"), now, 0.0, task.threads, task.executor),
             "device": task.device, "hostname": ""} for cfg in task.configs]


def run_figures(run: Run, stack: Stack, data: RunData | None, test: dict | None) -> dict:
    """A run's figures for its result row: status, training/validation/test figures, timing, compile flags."""
    t = run.cfg.train
    row = {"status": "diverged" if run.status == "diverged" else "completed",
           "error": "", "first_bad_step": run.first_bad_step if run.status == "diverged" else math.nan,
           "resumed_from_step": run.resumed_from_step, "steps_done": run.step, "best_step": run.best["step"],
           "epochs_done": run.step / run.cfg.steps_per_epoch,
           "val_elbo": run.best["elbo"], "val_iw_log_px": run.best["iw_log_px"],
           "train_seconds": run.train_seconds, "eval_seconds": run.eval_seconds, "wall_seconds": run.wall_seconds,
           "train_examples_per_s": run.step * t.batch_size / run.train_seconds if run.train_seconds else math.nan,
           "compiled": stack.fns.step_compiled, "compile_error": stack.fns.compile_error,
           "cuda_graphs": stack.fns.cuda_graphs and stack.fns.step_compiled,
           "compile_seconds": run.compile_seconds}
    if data is not None:
        row.update(data_digest=data.digest, eval_images=data.test.shape[0])
    if test is not None:
        row.update(test_elbo=test["elbo"], test_iw_log_px=test["iw_log_px"],
                   test_reconstruction=test["reconstruction"], test_kl=test["kl"],
                   test_iw_bits_per_dim=bits_per_dim(test["iw_log_px"], run.cfg.model.data_dim),
                   test_elbo_bits_per_dim=bits_per_dim(test["elbo"], run.cfg.model.data_dim))
    return row


def bits_per_dim(log_px: float, data_dim: int) -> float:
    """-log p(x) in bits per pixel: -log_px / (data_dim ln 2), from nats per image."""
    return -log_px / (data_dim * math.log(2.0))


def result_row(cfg: RunConfig, figures: dict, device: torch.device, started: datetime, wall: float,
               threads: int, executor: str = "local") -> dict:
    """The flat result row: identity, main config values, figures, provenance, every dotted config key."""
    m, t = cfg.model, cfg.train
    nan_cols = ("steps_done", "best_step", "val_elbo", "val_iw_log_px", "test_elbo", "test_iw_log_px",
                "test_reconstruction", "test_kl", "test_iw_bits_per_dim", "test_elbo_bits_per_dim",
                "train_examples_per_s", "train_seconds", "eval_seconds", "eval_images")
    row = {
        "run_id": cfg.run_id, "grid": cfg.grid, "variant": cfg.variant, "posterior": m.posterior,
        "prior": m.prior, **origins(m), "architecture": m.architecture, "latent_dim": m.latent_dim, "lr": t.lr,
        "seed": t.seed, "optimizer": t.optimizer, "batch_size": t.batch_size, "max_steps": t.max_steps,
        **{c: math.nan for c in nan_cols},
        "iw_samples": cfg.eval.iw_samples, "data_digest": "",
        "compiled": False, "cuda_graphs": False, "compile_error": "", "compile_seconds": 0.0,
        "stack_id": cfg.run_id, "stack_size": 1, "wall_seconds": wall,
        **figures,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "executor": executor, "hostname": socket.gethostname(),
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


def executor_device(executor: str, device: str, jobs: int, ray_address: str | None, cpus_per_run: float | None,
                    gpus_per_run: float | None) -> str:
    """Check the executor options together; returns the device the runs use."""
    if executor not in ("local", "ray"):
        raise UserError(f"--executor must be local or ray; got {executor!r}")
    if executor == "local":
        given = [n for n, v in (("--ray-address", ray_address), ("--cpus-per-run", cpus_per_run),
                                ("--gpus-per-run", gpus_per_run)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} only apply with --executor ray")
        return pick_device(device)
    if jobs != 1:
        raise UserError("--jobs is for --executor local; with ray, --cpus-per-run and --gpus-per-run set how "
                        "many tasks share a node")
    cpus, gpus = 1.0 if cpus_per_run is None else cpus_per_run, gpus_per_run or 0.0
    if not cpus > 0:
        raise UserError(f"--cpus-per-run must be > 0; got {cpus:g}")
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise UserError(f"--gpus-per-run must be a fraction in [0, 1] or a whole number; got {gpus:g}")
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda; got {device!r}")
    if device == "cuda" and not gpus:
        raise UserError("--device cuda with --executor ray needs --gpus-per-run (e.g. 1, or 0.25 to share a GPU)")
    if device == "cpu" and gpus:
        raise UserError("--device cpu and --gpus-per-run contradict each other")
    return "cuda" if gpus else "cpu"


def run_grid_command(grid: Path, results: Path, data_dir: Path | None, device: str, jobs: int,
                     dry_run: bool, stack: str = "auto", executor: str = "local", ray_address: str | None = None,
                     cpus_per_run: float | None = None, gpus_per_run: float | None = None,
                     offline: bool = False) -> int:
    """`vaebench run`: validate everything first (downloading missing data unless offline), then run what is not
    finished. Returns the exit code."""
    check_data_dir(data_dir)
    dev = executor_device(executor, device, jobs, ray_address, cpus_per_run, gpus_per_run)
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
    else:
        cores = os.cpu_count() or 1
        threads = max(1, cores // jobs) if dev == "cpu" else max(1, torch.get_num_threads())
    tasks = [RunTask(p.configs, str(results), str(data_dir) if data_dir else None, dev, threads, p.stack_id, executor)
             for p in plans]
    remote = executor == "ray"  # the driver writes remote rows: a retried or cancelled task leaves none
    failed = 0
    try:
        with ExitStack() as resources:
            if remote and tasks:
                from bench.executors.ray import RayExecutor

                pool = resources.enter_context(RayExecutor(
                    ray_address or os.environ.get("RAY_ADDRESS") or None, cpus_per_run or 1.0, gpus_per_run or 0.0,
                    on_lost=lost_task_rows))
                pool.check_nodes(results, partial(data_problem, sorted(datasets), tasks[0].data_dir))
                progress.say(pool.describe())
            else:
                pool = LocalExecutor(jobs, on_progress=progress.run_callback)
            progress.start(total=len(runs), skipped=len(done), stacks=len(plans))
            results_stream = resources.enter_context(closing(pool.map(partial(execute_task, write=not remote), tasks)))
            for rows in results_stream:
                for row in rows:
                    if remote:
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
