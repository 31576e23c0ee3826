"""`vaebench gaps`: the inference gaps of finished runs, written into their rows.

For every completed run without gap figures: load its checkpoint, take its test images as it was tested
(the row's `data.*` keys), compute the gap columns with the row's `eval.gap_*` settings (defaults where the
row predates them) and rewrite the row atomically. Resumable: a run that has its gaps is skipped, so an
interrupted command loses at most the run in progress.
"""

from __future__ import annotations

import math
import sys
from dataclasses import fields
from pathlib import Path
from typing import TextIO

import pandas as pd
import torch

from bench.errors import UserError
from bench.grid.config import DataConfig, EvalConfig
from bench.rows import write_row
from bench.storage import ResultsLayout
from bench.tasks import eval_sets, pick_device
from bench.training.gaps import TWO_LAYER_NOTE, gap_figures
from vae_core import CheckpointError, load_vae
from vae_core.data import check_data_dir, load_dataset


def _section(row: dict, cls: type, name: str):
    """The `name.*` keys of a row as a config dataclass (absent keys: defaults)."""
    values = {}
    for f in fields(cls):
        v = row.get(f"{name}.{f.name}")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        values[f.name] = v.item() if hasattr(v, "item") else v
    return cls(**values)


def has_gaps(row: dict) -> bool:
    v = row.get("approximation_gap")
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def gaps_command(results: Path, data_dir: Path | None, device: str = "auto", out: TextIO | None = None) -> int:
    """Compute the missing gaps of a results folder; returns the exit code (1 if a run could not be done)."""
    out = out or sys.stdout
    check_data_dir(data_dir)
    layout = ResultsLayout(results)
    paths = sorted((layout.root / "runs").glob("*.parquet"))
    if not paths:
        raise UserError(f"results folder {results} has no runs ({layout.root / 'runs'}/*.parquet)")
    dev = torch.device(pick_device(device))
    test_sets: dict[tuple, torch.Tensor] = {}
    done = skipped = problems = 0
    try:
        for path in paths:
            row = pd.read_parquet(path).iloc[0].to_dict()
            if row.get("status") != "completed" or has_gaps(row):
                skipped += 1
                continue
            if row.get("model.layers", 1) != 1:
                print(f"{row['run_id']}: skipped ({TWO_LAYER_NOTE})", file=out)
                skipped += 1
                continue
            data, ev = _section(row, DataConfig, "data"), _section(row, EvalConfig, "eval")
            key = (data.dataset, data.max_eval_images, data.eval_subset_seed)
            if key not in test_sets:
                test_sets[key] = eval_sets(load_dataset(data.dataset, data_dir), data)[1].to(dev)
            try:
                model = load_vae(layout.checkpoint(row["run_id"]), map_location=dev)
            except CheckpointError as err:
                print(f"{row['run_id']}: skipped ({err})", file=out)
                problems += 1
                continue
            figures = gap_figures(model, test_sets[key], ev)
            write_row({**row, **figures}, layout)
            done += 1
            print(f"{row['run_id']}: approximation gap {figures['approximation_gap']:.2f}, amortization gap "
                  f"{figures['amortization_gap']:.2f} nats ({figures['gap_images']} images, "
                  f"{figures['gap_seconds']:.0f} s)", file=out)
    except KeyboardInterrupt:
        print(f"interrupted: {done} run(s) written; re-run the same command to continue", file=out)
        return 130
    print(f"gaps written for {done} run(s); {skipped} skipped (not completed, or already done)"
          + (f"; {problems} without a usable checkpoint" if problems else ""), file=out)
    return 1 if problems else 0
