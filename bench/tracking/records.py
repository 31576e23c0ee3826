"""A result row and its curves as a tracker run: params (the flattened config), tags (identity, provenance),
metrics (every numeric result column, and the curves by step), the config as nested sections, and a digest
that says whether a row changed since it was exported. Pure: no tracker is imported here."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import numbers
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from bench.grid.config import SECTIONS

KEY_TAG = "vaebench.run_id"  # the tracker run of a result row is found by this tag
DIGEST_TAG = "vaebench.row_digest"  # set last: a tracker run without it was left half-written
GRID_TAG = "vaebench.grid"
REPEATED_CONFIG = ("latent_dim", "lr", "seed", "batch_size", "max_steps", "iw_samples")  # also dotted params
PROVENANCE_NUMBERS = ("torch_threads", "stack_size")  # how a run ran, not what it measured: tags
TIMES = ("started_at", "finished_at")  # the tracker run's start and end times
ARTIFACT_COLUMNS = ("traceback",)  # long text: a file of the run, not a tag
CURVE_AXES = ("run_id", "step", "epoch", "split")
TAG_CHARS = 5000  # below MLflow's tag limit (8000); a longer value (a compile error's text) is cut, the row keeps it


def is_config_key(column: str) -> bool:
    return column.split(".", 1)[0] in SECTIONS and "." in column


def present(value: Any) -> bool:
    """False for what a row holds where it has no value: None, NaN, an empty string."""
    if value is None or (isinstance(value, str) and not value):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def native_row(row: dict) -> dict:
    """The row with numpy scalars as Python values (a parquet row reads back as numpy scalars)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def run_params(row: dict) -> dict[str, str]:
    """The flattened config: every dotted key (`model.posterior`, `train.lr`, ...) as text."""
    return {k: as_text(v) for k, v in row.items() if is_config_key(k) and present(v)}


def run_tags(row: dict) -> dict[str, str]:
    """Every text or flag column that is not config (variant, families' origins, git commit, device, status,
    ...), the provenance numbers, `dataset`, the key tag, and MLflow's own commit tag."""
    skip = set(TIMES) | set(ARTIFACT_COLUMNS)
    tags = {k: as_text(v)[:TAG_CHARS] for k, v in row.items()
            if not is_config_key(k) and k not in skip and present(v)
            and (not is_number(v) or k in PROVENANCE_NUMBERS) and not isinstance(v, datetime)}
    tags.update({"dataset": as_text(row["data.dataset"]), KEY_TAG: row["run_id"], GRID_TAG: as_text(row["grid"])})
    if present(row.get("git_commit")) and row["git_commit"] != "unknown":
        tags["mlflow.source.git.commit"] = as_text(row["git_commit"])
    return tags


def run_metrics(row: dict) -> dict[str, float]:
    """Every numeric result column with a finite value (likelihoods, bits/dim, gaps, throughput, seconds,
    steps); the config values it repeats are params instead."""
    skip = set(REPEATED_CONFIG) | set(PROVENANCE_NUMBERS)
    return {k: float(v) for k, v in row.items()
            if not is_config_key(k) and k not in skip and is_number(v) and math.isfinite(v)}


def curve_metrics(curves: pd.DataFrame, started_ms: int) -> list[tuple[str, float, int, int]]:
    """(key, value, step, timestamp ms) for each finite value of each numeric curve column, keyed
    `split/column` (`train/elbo`, `valid/elbo`, `valid/iw_log_px`, ...); timestamps are the run's start plus
    the curve's `wall_seconds`."""
    found = []
    columns = [c for c in curves.columns if c not in CURVE_AXES and pd.api.types.is_numeric_dtype(curves[c])]
    for point in curves.sort_values(["step", "split"]).to_dict("records"):
        wall = point.get("wall_seconds")
        stamp = started_ms + int(1000 * wall) if is_number(wall) and math.isfinite(wall) else started_ms
        for column in columns:
            value = point[column]
            if is_number(value) and math.isfinite(value):
                found.append((f"{point['split']}/{column}", float(value), int(point["step"]), stamp))
    return found


def config_sections(row: dict) -> dict[str, dict[str, Any]]:
    """The run's config as `{section: {key: value}}`, lists as lists (the row holds them as their text)."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in row.items():
        if not is_config_key(key) or not present(value):
            continue
        section, field = key.split(".", 1)
        if isinstance(value, str) and value.startswith(("[", "(")):
            value = list(ast.literal_eval(value))
        sections[section][field] = value
    return sections


def row_digest(row: dict) -> str:
    """A hash of the row's values, the absent ones left out, so the same row reads the same however it was
    loaded; a row rewritten with other values (a re-run, gaps added) has another."""
    canonical = json.dumps({k: as_text(v) for k, v in sorted(row.items()) if present(v)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def millis(value: Any) -> int:
    """A row's timestamp in ms since the epoch."""
    return int(pd.Timestamp(value).timestamp() * 1000)
