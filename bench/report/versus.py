"""The "versus the baseline" comparison: per variant, the test-figure differences to a reference variant with
95% intervals (paired by seed where the seeds match, Welch otherwise) and the cost as ratios to the reference.

Pure functions from the run table (results/README.md schema) to DataFrames and text; choices of lr are made on
VALIDATION figures (`best_lr_table`), never on test figures.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.errors import UserError
from bench.report.stats import Difference, paired_difference, welch_difference
from bench.report.tables import COMPLETED, DASH, _ensure, best_lr_table, fmt_lr, variant_order

DEFAULT_BASELINE = "mean-field"
METRICS = {"log_px": "test_iw_log_px", "elbo": "test_elbo"}
METRIC_NAMES = {"log_px": "test IW log p(x)", "elbo": "test ELBO"}
PAIRED, WELCH, BASELINE, NONE = "paired", "welch", "baseline", "none"



def columns(metrics: dict[str, str] = METRICS) -> list[str]:
    """The versus table's columns for `metrics` (short name -> run-table column)."""
    return ["variant", "lr", "baseline_lr", "pairing", "n", "n_variant", "n_baseline", "excluded",
            *[f"{m}_{s}" for m in metrics for s in ("mean", "se", "dof", "lo", "hi")],
            "step_seconds", "wall_seconds", "step_ratio", "wall_ratio", "flops_per_example", "flops_ratio",
            "gflop_per_s"]


COLUMNS = columns()
COST_AXES = {"flops": ("flops_ratio", "training FLOPs per example (counted), relative to the reference"),
             "seconds": ("step_ratio", "training seconds per step (measured), relative to the reference")}
"""`vaebench report --cost`: the versus figures' x-axis column and label."""


def pick_baseline(runs: pd.DataFrame, name: str | None = None) -> str:
    """The reference variant label: `name` (a label, or a variant name unique across grids); by default
    `mean-field` when present, else the first variant in grid order. UserError naming the choices otherwise."""
    runs = _ensure(runs)
    labels = variant_order(runs)
    if name is None:
        if DEFAULT_BASELINE in labels:
            return DEFAULT_BASELINE
        by_variant = sorted({lab for lab, var in zip(runs["label"], runs["variant"]) if var == DEFAULT_BASELINE})
        return by_variant[0] if len(by_variant) == 1 else labels[0]
    if name in labels:
        return name
    matches = sorted({lab for lab, var in zip(runs["label"], runs["variant"]) if var == name})
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"--baseline {name!r} names a variant of several grids; pick one of: {', '.join(matches)}")
    raise UserError(f"--baseline {name!r} is not a variant of these results; variants: {', '.join(labels)}")


def _per_seed(rows: pd.DataFrame, metrics: dict[str, str] = METRICS) -> pd.DataFrame:
    """Completed rows with every metric's figure, one row per seed (duplicates averaged), indexed by seed."""
    cols = list(metrics.values())
    ok = rows[(rows["status"] == COMPLETED) & rows[cols].notna().all(axis=1) & rows["seed"].notna()]
    return ok.groupby("seed")[cols].mean()


def _seed(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


def _why_missing(rows: pd.DataFrame, seed: float, label: str) -> str:
    at = rows[rows["seed"] == seed]
    if at.empty:
        return f"not run for {label}"
    status = at["status"].iloc[0]
    return f"{label} {status}" if status != COMPLETED else f"{label} has no test figure"


def _excluded(var_rows: pd.DataFrame, base_rows: pd.DataFrame, pairing: str, variant: str, baseline: str,
              metrics: dict[str, str] = METRICS) -> str:
    """'seed 2 (iaf diverged); seed 3 (not run for mean-field)': every seed of either side the comparison leaves
    out, with the reason. Welch leaves out only runs that did not complete; pairing also leaves out partnerless
    seeds."""
    sides = [(var_rows, set(_per_seed(var_rows, metrics).index), variant),
             (base_rows, set(_per_seed(base_rows, metrics).index), baseline)]
    seen = set(var_rows["seed"].dropna()) | set(base_rows["seed"].dropna())
    parts = []
    for seed in sorted(seen):
        reasons = [_why_missing(rows, seed, label) for rows, ok, label in sides
                   if seed not in ok and (pairing == PAIRED or seed in set(rows["seed"]))]
        if pairing == PAIRED and all(seed in ok for _, ok, _ in sides):
            reasons = []
        if reasons:
            parts.append(f"seed {_seed(seed)} ({', '.join(reasons)})")
    return "; ".join(parts)


def _cost(rows: pd.DataFrame) -> tuple[float, float]:
    """(mean training seconds per step, mean wall seconds per run) over completed runs, each run charged its
    share of its stack: a stack of R runs trains all R in its seconds (`stack_size`; 1 for older results)."""
    done = rows[rows["status"] == COMPLETED]
    steps = done["steps_done"].where(done["steps_done"] > 0)
    share = done["stack_size"].fillna(1) if "stack_size" in done else 1
    return float((done["train_seconds"] / steps / share).mean()), float((done["wall_seconds"] / share).mean())


def _counted(rows: pd.DataFrame) -> tuple[float, float]:
    """(mean counted training FLOPs per example, mean achieved GFLOP/s) over completed runs; NaN where the rows
    have no counts (results written before counting)."""
    done = rows[rows["status"] == COMPLETED]

    def mean(col: str) -> float:
        return float(done[col].mean()) if col in done and done[col].notna().any() else math.nan

    return mean("train_flops_per_example"), mean("train_gflop_per_s")


def _diff_columns(diffs: dict[str, Difference | None]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m, d in diffs.items():
        for s in ("mean", "se", "dof", "lo", "hi"):
            out[f"{m}_{s}"] = math.nan if d is None else getattr(d, s)
    return out


def compare(var_rows: pd.DataFrame, base_rows: pd.DataFrame, variant: str, baseline: str,
            metrics: dict[str, str] = METRICS) -> dict[str, Any]:
    """Differences (variant - baseline) of the `metrics` columns (default: the test figures) and cost ratios of
    two sets of runs (each at one lr).

    Paired by seed on the seeds completed in both when the two ran the same seeds (or share at least two completed
    seeds); Welch's unpaired comparison of all completed seeds otherwise. Every seed left out is named in
    `excluded` with the reason.
    """
    v, b = _per_seed(var_rows, metrics), _per_seed(base_rows, metrics)
    common = sorted(set(v.index) & set(b.index))
    same_design = set(var_rows["seed"].dropna()) == set(base_rows["seed"].dropna())
    diffs: dict[str, Difference | None] = dict.fromkeys(metrics)
    if v.empty or b.empty:
        pairing, n = NONE, 0
    elif common and (same_design or len(common) >= 2):
        pairing, n = PAIRED, len(common)
        diffs = {m: paired_difference(v.loc[common, c].tolist(), b.loc[common, c].tolist())
                 for m, c in metrics.items()}
    else:
        pairing, n = WELCH, min(len(v), len(b))
        diffs = {m: welch_difference(v[c].tolist(), b[c].tolist()) for m, c in metrics.items()}
    step_v, wall_v = _cost(var_rows)
    step_b, wall_b = _cost(base_rows)
    flops_v, gflop_per_s = _counted(var_rows)
    flops_b, _ = _counted(base_rows)
    excluded = _excluded(var_rows, base_rows, pairing, variant, baseline, metrics)
    return {"pairing": pairing, "n": n, "n_variant": len(v), "n_baseline": len(b), "excluded": excluded,
            **_diff_columns(diffs), "step_seconds": step_v, "wall_seconds": wall_v,
            "step_ratio": step_v / step_b if step_b > 0 else math.nan,
            "wall_ratio": wall_v / wall_b if wall_b > 0 else math.nan, "flops_per_example": flops_v,
            "flops_ratio": flops_v / flops_b if flops_b > 0 else math.nan, "gflop_per_s": gflop_per_s}


def _at_lr(runs: pd.DataFrame, label: str, lr: float) -> pd.DataFrame:
    sub = runs[runs["label"] == label]
    return sub[sub["lr"].isna()] if math.isnan(lr) else sub[sub["lr"] == lr]


def versus_table(runs: pd.DataFrame, baseline: str, metrics: dict[str, str] = METRICS) -> pd.DataFrame:
    """One row per variant (baseline first), each at its best lr on validation, compared with the baseline at
    the baseline's best lr (columns: `columns(metrics)`)."""
    runs = _ensure(runs)
    best = best_lr_table(runs).set_index("variant")["lr"]
    base_lr = best.get(baseline, math.nan)
    base_rows = _at_lr(runs, baseline, base_lr)
    rows = []
    for label in [baseline] + [v for v in variant_order(runs) if v != baseline]:
        lr = best.get(label, math.nan)
        var_rows = _at_lr(runs, label, lr)
        row = {"variant": label, "lr": lr, "baseline_lr": base_lr,
               **compare(var_rows, base_rows, label, baseline, metrics)}
        if label == baseline:
            row.update(_diff_columns(dict.fromkeys(metrics)), pairing=BASELINE,
                       **{f"{m}_mean": 0.0 for m in metrics},
                       excluded=_excluded(base_rows, base_rows.iloc[0:0], WELCH, baseline, baseline, metrics))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns(metrics))


def versus_by_lr(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (variant, lr) that the baseline also ran, compared with the baseline at the same lr."""
    runs = _ensure(runs)
    rows = []
    base_lrs = set(runs.loc[runs["label"] == baseline, "lr"].dropna())
    for label in variant_order(runs):
        if label == baseline:
            continue
        for lr in sorted(set(runs.loc[runs["label"] == label, "lr"].dropna()) & base_lrs):
            rows.append({"variant": label, "lr": lr, "baseline_lr": lr,
                         **compare(_at_lr(runs, label, lr), _at_lr(runs, baseline, lr), label, baseline)})
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------------- display
def _signed(x: float, digits: int = 2) -> str:
    return DASH if math.isnan(x) else f"{x:+.{digits}f}".replace("-", "−")


def fmt_delta(mean: float, se: float) -> str:
    if math.isnan(mean):
        return DASH
    return _signed(mean) + ("" if math.isnan(se) else f" ± {se:.2f}")


def fmt_ci(lo: float, hi: float, n: int) -> str:
    if math.isnan(lo):
        return f"{DASH} (n = {n})" if n else DASH
    return f"[{_signed(lo)}, {_signed(hi)}]"


def fmt_pairing(pairing: str, n: int, n_variant: int, n_baseline: int, dof: float) -> str:
    if pairing == BASELINE:
        return "reference"
    if pairing == PAIRED:
        return f"paired, {n} seed{'s' if n != 1 else ''}" + ("" if math.isnan(dof) else f", t dof {dof:g}")
    if pairing == WELCH:
        text = f"unpaired (Welch), {n_variant} vs {n_baseline} seeds"
        return text + ("" if math.isnan(dof) else f", t dof {dof:.1f}")
    return "no completed run"


def fmt_ratio(x: float) -> str:
    return DASH if math.isnan(x) else f"{x:.2f}×"


def display_versus(table: pd.DataFrame, show_lr: bool) -> pd.DataFrame:
    """The versus table as strings, same index as `table`."""
    out = pd.DataFrame(index=table.index)
    out["variant"] = table["variant"]
    if show_lr:
        out["lr"] = table["lr"].map(fmt_lr)
    out["comparison"] = [fmt_pairing(p, n, nv, nb, dof) for p, n, nv, nb, dof in
                         zip(table["pairing"], table["n"], table["n_variant"], table["n_baseline"],
                             table["log_px_dof"])]
    for m, short in (("log_px", "log p(x)"), ("elbo", "ELBO")):
        reference = table["pairing"] == BASELINE
        out[f"Δ {short} ± se"] = [DASH if r else fmt_delta(a, s)
                                  for r, a, s in zip(reference, table[f"{m}_mean"], table[f"{m}_se"])]
        out[f"{short} 95% CI"] = [DASH if r else fmt_ci(lo, hi, n)
                                  for r, lo, hi, n in zip(reference, table[f"{m}_lo"], table[f"{m}_hi"], table["n"])]
    out["train FLOPs/ex"] = table["flops_ratio"].map(fmt_ratio)
    out["train s/step"] = table["step_ratio"].map(fmt_ratio)
    out["GFLOP/s"] = table["gflop_per_s"].map(lambda x: DASH if math.isnan(x) else f"{x:.1f}")
    out["wall s/run"] = table["wall_ratio"].map(fmt_ratio)
    out["seeds left out"] = table["excluded"].replace("", DASH)
    return out


def _verdict(row: pd.Series, m: str, baseline: str, per_lr: bool) -> tuple[str, str]:
    """(kind, phrase) for one metric of one row: kind in 'higher', 'lower', 'zero', 'none'."""
    name = METRIC_NAMES[m] + (f" at lr {fmt_lr(row['lr'])}" if per_lr else "")
    mean, lo, hi = row[f"{m}_mean"], row[f"{m}_lo"], row[f"{m}_hi"]
    if math.isnan(lo):
        return "none", f"{row['variant']} ({name})"
    ci = f"{_signed(mean)} nats, 95% CI [{_signed(lo)}, {_signed(hi)}]"
    if lo > 0:
        return "higher", f"{row['variant']} has a higher {name} than {baseline} ({ci})"
    if hi < 0:
        return "lower", f"{row['variant']} has a lower {name} than {baseline} ({ci})"
    return "zero", f"{row['variant']} ({name}: {ci})"


def versus_sentence(table: pd.DataFrame, baseline: str, per_lr: bool = False) -> str:
    """Which differences are distinguishable from zero at this number of seeds, in plain words (naming the lr
    when `per_lr`). A difference whose interval includes 0 is never called higher, lower or better."""
    rows = table[~table["pairing"].isin([BASELINE, NONE])]
    if rows.empty:
        return f"No variant has completed runs to compare with {baseline}."
    found: dict[str, list[str]] = {"higher": [], "lower": [], "zero": [], "none": []}
    for _, row in rows.iterrows():
        for m in METRICS:
            kind, phrase = _verdict(row, m, baseline, per_lr)
            found[kind].append(phrase)
    ns = sorted({int(n) for n in rows["n"]})
    seeds = f"{'/'.join(map(str, ns))} seed{'s' if ns != [1] else ''} per comparison"
    parts = []
    if found["higher"] or found["lower"]:
        parts.append(f"At {seeds}, distinguishable from zero (the 95% interval excludes 0): "
                     + "; ".join(found["higher"] + found["lower"]) + ".")
    else:
        parts.append(f"At {seeds}, no difference is distinguishable from zero (every 95% interval includes 0).")
    if found["zero"] and (found["higher"] or found["lower"]):
        parts.append(f"Not distinguishable from {baseline} at this number of seeds (the interval includes 0, so "
                     "neither is better): " + "; ".join(found["zero"]) + ".")
    elif found["zero"]:
        parts.append("Not distinguishable from zero: " + "; ".join(found["zero"]) + ".")
    if found["none"]:
        parts.append("No interval (fewer than two seeds to compare), no conclusion: "
                     + ", ".join(found["none"]) + ".")
    return " ".join(parts)


def no_lr_overlap(runs: pd.DataFrame, baseline: str) -> list[str]:
    """Variants that share no lr with the baseline (absent from `versus_by_lr`)."""
    runs = _ensure(runs)
    base_lrs = set(runs.loc[runs["label"] == baseline, "lr"].dropna())
    return [v for v in variant_order(runs)
            if v != baseline and not set(runs.loc[runs["label"] == v, "lr"].dropna()) & base_lrs]

