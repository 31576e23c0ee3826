"""Result rows: one flat row per run (identity, main config values, figures, provenance, every dotted config
key), built from a finished or failed run and written as `runs/<run_id>.parquet`."""

from __future__ import annotations

import math
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from bench.grid.config import RunConfig
from bench.storage import ResultsLayout, write_parquet
from bench.training.cost import COST_COLUMNS
from bench.training.run import Run, RunData
from bench.training.stack import Stack
from vae_core.registry import origins


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

def write_row(row: dict, layout: ResultsLayout) -> None:
    write_parquet(pd.DataFrame([row]), layout.run(row["run_id"]))


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
           "compile_seconds": run.compile_seconds, **run.cost}
    if run.cost and run.train_seconds:
        row["train_gflop_per_s"] = run.cost["train_flops_per_example"] * row["train_examples_per_s"] / 1e9
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
                "train_examples_per_s", "train_seconds", "eval_seconds", "eval_images", *COST_COLUMNS,
                "train_gflop_per_s")
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
