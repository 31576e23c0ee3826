"""Report tables: pure functions from the run table (results/README.md schema) to DataFrames and markdown.

Every statistic uses `status == "completed"` rows only; the other rows are counted and listed (`failures`).
Choices (best row, best learning rate, best seed) are made on VALIDATION figures, never on test figures.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Hashable

import numpy as np
import pandas as pd

from bench.errors import UserError

COMPLETED = "completed"
DASH = "–"

# Columns the report reads; absent ones (older or partial rows) are added as NaN.
NUMERIC_COLUMNS = ("lr", "seed", "latent_dim", "steps_done", "best_step", "val_elbo", "val_iw_log_px", "test_elbo",
                   "test_iw_log_px", "train_examples_per_s", "train_seconds", "eval_seconds", "wall_seconds",
                   "eval_images", "iw_samples", "first_bad_step", "torch_threads", "test_iw_bits_per_dim",
                   "test_elbo_bits_per_dim")
TEXT_COLUMNS = ("grid", "variant", "status", "error", "device", "torch_version", "git_commit", "data_digest")


# ---------------------------------------------------------------------------------------------------- loading
def _read_folder(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """All readable `*.parquet` files of `folder` as one DataFrame, plus a note per unreadable file."""
    frames, notes = [], []
    for path in sorted(folder.glob("*.parquet")):
        try:
            frames.append(pd.read_parquet(path))
        except Exception as err:  # pyarrow raises several types for a damaged file
            notes.append(f"`{path.name}` in `{folder}` could not be read ({type(err).__name__}) and was skipped.")
    frames = [f for f in frames if not f.empty]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), notes


def load_results(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, curves, notes) of a results folder; UserError when it is missing or holds no run rows."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist")
    runs_dir = results_dir / "runs"
    if not any(runs_dir.glob("*.parquet")):
        raise UserError(f"results folder {results_dir} has no runs ({runs_dir}/*.parquet): run `vaebench run` first")
    runs, notes = _read_folder(runs_dir)
    if runs.empty or "run_id" not in runs.columns:
        raise UserError(f"results folder {results_dir} has no readable run rows in {runs_dir}")
    curves, curve_notes = _read_folder(results_dir / "curves")
    return normalize_runs(runs), curves, notes + curve_notes


def load_curves(results_dir: Path) -> pd.DataFrame:
    """Every curve row of a results folder (empty when there are none)."""
    return _read_folder(Path(results_dir) / "curves")[0]


def normalize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy with every column the report reads present and a `label` column naming the variant
    (`grid/variant` when the table holds several grids)."""
    runs = runs.copy()
    for col in NUMERIC_COLUMNS:
        if col not in runs.columns:
            runs[col] = np.nan
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    for col in TEXT_COLUMNS:
        if col not in runs.columns:
            runs[col] = ""
        runs[col] = runs[col].fillna("").astype(str)
    if "started_at" not in runs.columns:
        runs["started_at"] = pd.NaT
    grids = runs["grid"].unique()
    runs["label"] = runs["variant"] if len(grids) <= 1 else runs["grid"] + "/" + runs["variant"]
    return runs


def _ensure(runs: pd.DataFrame) -> pd.DataFrame:
    return runs if "label" in runs.columns else normalize_runs(runs)


def variant_order(runs: pd.DataFrame) -> list[str]:
    """Variant labels in grid order (first start time; rows without one last), then by name."""
    runs = _ensure(runs)
    started = pd.to_datetime(runs["started_at"], errors="coerce", utc=True)
    first = started.groupby(runs["label"]).min()
    key = {label: (pd.isna(t), t if not pd.isna(t) else pd.Timestamp(0, tz="UTC"), label)
           for label, t in first.items()}
    return sorted(runs["label"].unique(), key=lambda label: key[label])


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    runs = _ensure(runs)
    return runs[runs["status"] == COMPLETED]


def several_lrs(runs: pd.DataFrame) -> bool:
    return _ensure(runs)["lr"].nunique(dropna=True) > 1


# ---------------------------------------------------------------------------------------------------- statistics
def _stats(group: pd.DataFrame) -> dict[str, float]:
    """Mean and sample sd (ddof=1; NaN with n=1) of the test figures of completed runs."""
    gap = group["test_iw_log_px"] - group["test_elbo"]
    return {
        "n": int(len(group)),
        "log_px_mean": group["test_iw_log_px"].mean(), "log_px_sd": group["test_iw_log_px"].std(ddof=1),
        "elbo_mean": group["test_elbo"].mean(), "elbo_sd": group["test_elbo"].std(ddof=1),
        "gap_mean": gap.mean(), "gap_sd": gap.std(ddof=1),
        "bits_mean": group["test_iw_bits_per_dim"].mean(), "bits_sd": group["test_iw_bits_per_dim"].std(ddof=1),
        "val_elbo_mean": group["val_elbo"].mean(),
        "examples_per_s": group["train_examples_per_s"].mean(),
        "wall_seconds": group["wall_seconds"].mean(),
    }


STAT_COLUMNS = ("n", "log_px_mean", "log_px_sd", "elbo_mean", "elbo_sd", "gap_mean", "gap_sd", "bits_mean",
                "bits_sd", "val_elbo_mean", "examples_per_s", "wall_seconds")


def main_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, lr): statistics over completed seeds plus `n_not_completed` (diverged/failed).

    Columns: variant, lr, n, n_not_completed, log_px_mean/sd, elbo_mean/sd, gap_mean/sd (gap = log p(x) - ELBO
    per run), bits_mean/sd (the test IW bound in bits/dim), val_elbo_mean, examples_per_s, wall_seconds. A
    (variant, lr) with no completed run keeps a row with n = 0 and NaN statistics.
    """
    runs = _ensure(runs)
    rows = []
    order = variant_order(runs)
    for label in order:
        sub = runs[runs["label"] == label]
        for lr in sorted(sub["lr"].unique(), key=lambda v: (math.isnan(v), v)):
            at_lr = sub[sub["lr"].isna()] if math.isnan(lr) else sub[sub["lr"] == lr]
            done = at_lr[at_lr["status"] == COMPLETED]
            rows.append({"variant": label, "lr": lr, "n_not_completed": int(len(at_lr) - len(done)), **_stats(done)})
    return pd.DataFrame(rows, columns=["variant", "lr", "n_not_completed", *STAT_COLUMNS])


def best_row(table: pd.DataFrame) -> Hashable | None:
    """Index of the row with the highest mean VALIDATION ELBO (None when no row has one)."""
    val = pd.to_numeric(table["val_elbo_mean"], errors="coerce")
    return None if val.isna().all() else val.idxmax()


def best_lr_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant, the lr with the highest mean validation ELBO over its completed seeds, with its test figures.

    Columns: variant, lr, lrs_tried, val_elbo_mean and the statistics of `main_table`. A variant without a
    completed run gets lr = NaN and n = 0.
    """
    runs = _ensure(runs)
    table = main_table(runs)
    rows = []
    for label in variant_order(runs):
        sub = table[table["variant"] == label]
        tried = ", ".join(f"{lr:g}" for lr in sub["lr"] if not math.isnan(lr))
        ranked = sub[sub["n"] > 0].dropna(subset=["val_elbo_mean"])
        if ranked.empty:
            rows.append({"variant": label, "lr": np.nan, "lrs_tried": tried, "n": 0})
            continue
        best = ranked.loc[ranked["val_elbo_mean"].idxmax()]
        rows.append({"lrs_tried": tried, **best.drop("n_not_completed").to_dict()})
    out = pd.DataFrame(rows, columns=["variant", "lr", "lrs_tried", *STAT_COLUMNS])
    out["n"] = out["n"].fillna(0).astype(int)
    return out


def best_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant (at its best lr on validation) the completed run with the highest VALIDATION ELBO.

    Columns: variant, lr, seed, run_id, val_elbo, latent_dim. Variants without a completed run are absent.
    """
    runs = _ensure(runs)
    done = completed(runs)
    rows = []
    for _, best in best_lr_table(runs).iterrows():
        if best["n"] == 0:
            continue
        cand = done[(done["label"] == best["variant"]) & (done["lr"] == best["lr"])].dropna(subset=["val_elbo"])
        if cand.empty:
            continue
        run = cand.loc[cand["val_elbo"].idxmax()]
        rows.append({"variant": best["variant"], "lr": run["lr"], "seed": run["seed"], "run_id": run["run_id"],
                     "val_elbo": run["val_elbo"], "latent_dim": run["latent_dim"]})
    return pd.DataFrame(rows, columns=["variant", "lr", "seed", "run_id", "val_elbo", "latent_dim"])


def status_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per variant and status (columns completed, diverged, failed, then any other status, and total)."""
    runs = _ensure(runs)
    counts = pd.crosstab(runs["label"], runs["status"])
    statuses = ["completed", "diverged", "failed"] + sorted(set(counts.columns) - {"completed", "diverged", "failed"})
    counts = counts.reindex(index=variant_order(runs), columns=statuses, fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "variant"
    return counts.reset_index()


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run that did not complete: run_id, variant, lr, seed, status, detail (first bad step or error)."""
    runs = _ensure(runs)
    bad = runs[runs["status"] != COMPLETED]
    rows = []
    for _, r in bad.iterrows():
        if r["status"] == "diverged" and not pd.isna(r["first_bad_step"]):
            detail = f"non-finite loss at step {int(r['first_bad_step'])}"
        else:
            detail = r["error"] or "(no error recorded)"
        rows.append({"run_id": r["run_id"], "variant": r["label"], "lr": r["lr"], "seed": r["seed"],
                     "status": r["status"], "detail": detail})
    out = pd.DataFrame(rows, columns=["run_id", "variant", "lr", "seed", "status", "detail"])
    return out.sort_values(["variant", "run_id"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- formatting
def fmt_num(x: Any, digits: int = 2) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_mean_sd(mean: Any, sd: Any, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    return f"{mean:.{digits}f} ± {fmt_num(sd, digits)}"


def fmt_rate(x: Any) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def fmt_seconds(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    if x < 120:
        return f"{x:.1f} s"
    if x < 2 * 3600:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def fmt_lr(x: Any) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def _with_bits(out: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """`out` with a 'test bits/dim' column after 'test log p(x)' (8-bit data)."""
    at = list(out.columns).index("test log p(x)") + 1
    out.insert(at, "test bits/dim", [fmt_mean_sd(m, s, 3) for m, s in zip(table["bits_mean"], table["bits_sd"])])
    return out


def display_main_table(table: pd.DataFrame, show_lr: bool, bits: bool = False) -> pd.DataFrame:
    """The main table as strings, same index as `table`; `bits` adds the test bound in bits/dim."""
    out = pd.DataFrame(index=table.index)
    out["variant"] = table["variant"]
    if show_lr:
        out["lr"] = table["lr"].map(fmt_lr)
    out["seeds"] = table["n"].astype(int).astype(str)
    out["test log p(x)"] = [fmt_mean_sd(m, s) for m, s in zip(table["log_px_mean"], table["log_px_sd"])]
    out["test ELBO"] = [fmt_mean_sd(m, s) for m, s in zip(table["elbo_mean"], table["elbo_sd"])]
    out["gap"] = [fmt_mean_sd(m, s) for m, s in zip(table["gap_mean"], table["gap_sd"])]
    out["val ELBO"] = table["val_elbo_mean"].map(fmt_num)
    out["train ex/s"] = table["examples_per_s"].map(fmt_rate)
    out["wall"] = table["wall_seconds"].map(fmt_seconds)
    out["diverged/failed"] = table["n_not_completed"].astype(int).astype(str)
    return _with_bits(out, table) if bits else out


def display_best_lr_table(table: pd.DataFrame, bits: bool = False) -> pd.DataFrame:
    out = pd.DataFrame(index=table.index)
    out["variant"] = table["variant"]
    out["best lr"] = table["lr"].map(fmt_lr)
    out["lrs tried"] = table["lrs_tried"].replace("", DASH)
    out["seeds"] = table["n"].astype(int).astype(str)
    out["val ELBO"] = table["val_elbo_mean"].map(fmt_num)
    out["test log p(x)"] = [fmt_mean_sd(m, s) for m, s in zip(table["log_px_mean"], table["log_px_sd"])]
    out["test ELBO"] = [fmt_mean_sd(m, s) for m, s in zip(table["elbo_mean"], table["elbo_sd"])]
    out["gap"] = [fmt_mean_sd(m, s) for m, s in zip(table["gap_mean"], table["gap_sd"])]
    out["train ex/s"] = table["examples_per_s"].map(fmt_rate)
    return _with_bits(out, table) if bits else out


def _cell(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        text = DASH
    elif isinstance(x, float):
        text = f"{x:g}"
    else:
        text = str(x)
    return text.replace("|", "\\|").replace("\n", " ")


_NUMBER = re.compile(r"^[-+–−\d.,±e ]+(s|min|h|×)?$")


def to_markdown(df: pd.DataFrame, bold_row: Hashable | None = None) -> str:
    """A GitHub markdown table of `df` (columns as header, index not shown; numeric columns right-aligned);
    row `bold_row` (an index label) in bold."""
    header = [_cell(c) for c in df.columns]
    numeric = [len(df) > 0 and all(_NUMBER.match(_cell(v)) for v in df.iloc[:, i]) for i in range(df.shape[1])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for idx, row in df.iterrows():
        cells = [_cell(v) for v in row]
        if bold_row is not None and idx == bold_row:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
