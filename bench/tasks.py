"""One task end to end, what an executor runs: a stack of runs (one run when unstacked) on its device, its
data prepared, trained, tested, each run's row written as it finishes; a failure fails only the runs not yet
finished."""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone

import torch

from bench.errors import UserError
from bench.grid.config import DataConfig, RunConfig
from bench.quiet import quiet_torch
from bench.rows import result_row, run_figures, write_row
from bench.storage import ResultsLayout
from bench.training.evaluate import TEST_SEED_OFFSET
from bench.training.gaps import gap_figures
from bench.training.run import RunData
from bench.training.stack import ProgressFn, Stack
from vae_core import load_vae
from vae_core.data import DataError, binarize, load_dataset
from vae_core.data.catalog import get_spec
from vae_core.layer_diagnostics import layer_figures


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
            tested = test is not None
            gaps = run_gaps(run.cfg, layout, data.test, device) if tested and run.cfg.eval.gaps else {}
            layers = run_layers(run.cfg, layout, data.test, device) if tested and run.cfg.model.layers == 2 else {}
            record(run.cfg, {**run_figures(run, stack, data, test), **gaps, **layers})  # wall_seconds counts both
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
    """The gap columns of a run (`bench.training.gaps`), from its checkpoint file: the weights it was tested with."""
    return gap_figures(load_vae(layout.checkpoint(cfg.run_id), map_location=device), test, cfg.eval)


def run_layers(cfg: RunConfig, layout: ResultsLayout, test: torch.Tensor, device: torch.device) -> dict:
    """A two-layer run's per-layer KL and active units (`vae_core.layer_diagnostics`) on its test images, from its
    checkpoint, with `eval.gap_au_samples` draws per image seeded like its test evaluation."""
    g = torch.Generator(device=device).manual_seed(cfg.train.seed + TEST_SEED_OFFSET)
    model = load_vae(layout.checkpoint(cfg.run_id), map_location=device)
    return layer_figures(model, test, cfg.eval.gap_au_samples, g, batch=100)


def execute_run(task: RunTask, on_progress: ProgressFn | None = None) -> dict:
    """`execute_task` for a task of one run: its row."""
    (row,) = execute_task(task, on_progress)
    return row


def lost_task_rows(task: RunTask, err: BaseException) -> list[dict]:
    """'failed' rows for the runs of a task whose worker returned nothing (it died more often than retries
    allow)."""
    now = datetime.now(timezone.utc)
    figures = {"status": "failed", "error": f"{type(err).__name__}: {err}".splitlines()[0],
               "first_bad_step": math.nan, "stack_id": task.stack_id, "stack_size": len(task.configs)}
    return [{**result_row(cfg, figures, torch.device("cpu"), now, 0.0, task.threads, task.executor),
             "device": task.device, "hostname": ""} for cfg in task.configs]
