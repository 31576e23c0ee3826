"""The inference-gap section of the report (runs with `eval.gaps`, or after `vaebench gaps`): per dataset, a
table of the decomposition per variant (mean ± sd over seeds, and the versus-style paired Δ of each gap
against the baseline), a stacked-bar figure like Cremer et al.'s, and a sentence naming the gaps a family
shrinks or widens, only where the 95% interval excludes 0.

Pure functions from the run table; each variant at its best lr on validation, as in the versus table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from bench.report.figures import SkipFigure, new_figure, save
from bench.report.tables import DASH, _ensure, best_lr_table, completed, fmt_mean_sd, to_markdown, variant_order
from bench.report.versus import BASELINE, NONE, _at_lr, _signed, fmt_ci, fmt_delta, versus_table

GAP_METRICS = {"approximation": "approximation_gap", "amortization": "amortization_gap"}
FIGURES = {"log p̂(x)": "gap_iw_log_px", "L[q]": "gap_elbo", "L[q*]": "elbo_local_opt",
           "L[q*_FFG]": "elbo_local_opt_ffg", "approximation gap": "approximation_gap",
           "amortization gap": "amortization_gap", "active units": "active_units", "mean KL": "mean_kl"}
DATASET = "data.dataset"


def with_gaps(runs: pd.DataFrame) -> pd.DataFrame:
    """The run table with every gap column (NaN where a run has none) and a dataset column."""
    runs = _ensure(runs).copy()
    for col in FIGURES.values():
        if col not in runs.columns:
            runs[col] = math.nan
    if DATASET not in runs.columns:
        runs[DATASET] = "binarized-mnist"
    return runs


def has_gaps(runs: pd.DataFrame) -> bool:
    return "approximation_gap" in runs.columns and completed(runs)["approximation_gap"].notna().any()


def gap_tables(runs: pd.DataFrame, baseline: str) -> dict[str, pd.DataFrame]:
    """Per dataset: one row per variant (each at its best lr) with mean and sd of FIGURES over the seeds that
    have gaps, and the paired Δ of each gap against `baseline` (the versus table's columns, GAP_METRICS)."""
    runs = with_gaps(runs)
    out = {}
    for dataset in sorted(runs[DATASET].dropna().unique()):
        sub = runs[runs[DATASET] == dataset]
        if not completed(sub)["approximation_gap"].notna().any():
            continue
        versus = versus_table(sub, baseline, GAP_METRICS).set_index("variant") if baseline in set(sub["label"]) \
            else None
        best = best_lr_table(sub).set_index("variant")["lr"]
        rows = []
        order = variant_order(sub)
        for label in sorted(order, key=lambda v: (v != baseline, order.index(v))):  # the baseline first
            at = completed(_at_lr(sub, label, best.get(label, math.nan)))
            at = at[at["approximation_gap"].notna()]
            row = {"variant": label, "n": len(at)}
            for name, col in FIGURES.items():
                row[f"{col}_mean"], row[f"{col}_sd"] = at[col].mean(), at[col].std(ddof=1)
            if versus is not None and label in versus.index:
                row.update(versus.loc[label].drop(["lr", "baseline_lr"]).to_dict())
            rows.append(row)
        out[dataset] = pd.DataFrame(rows)
    return out


def display_gap_table(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    out = pd.DataFrame(index=table.index)
    out["variant"], out["seeds"] = table["variant"], table["n"]
    for name, col in FIGURES.items():
        out[name] = [fmt_mean_sd(m, s) for m, s in zip(table[f"{col}_mean"], table[f"{col}_sd"])]
    for m in GAP_METRICS:
        if f"{m}_mean" not in table:
            continue
        reference = table["pairing"] == BASELINE
        out[f"Δ {m} ± se"] = [DASH if r else fmt_delta(a, s) for r, a, s in
                              zip(reference, table[f"{m}_mean"], table[f"{m}_se"])]
        out[f"{m} 95% CI"] = [DASH if r else fmt_ci(lo, hi, n) for r, lo, hi, n in
                              zip(reference, table[f"{m}_lo"], table[f"{m}_hi"], table["n"])]
    return out


def gap_sentence(table: pd.DataFrame, baseline: str) -> str:
    """Which gap each family shrinks or widens against `baseline`, only where the 95% interval excludes 0."""
    if "pairing" not in table:
        return f"No gap comparison: `{baseline}` has no runs with gaps here."
    rows = table[~table["pairing"].isin([BASELINE, NONE]) & table["pairing"].notna()]
    found = []
    for _, row in rows.iterrows():
        for m in GAP_METRICS:
            lo, hi, mean = row[f"{m}_lo"], row[f"{m}_hi"], row[f"{m}_mean"]
            if math.isnan(lo) or lo <= 0 <= hi:
                continue
            verb = "shrinks" if hi < 0 else "widens"
            found.append(f"{row['variant']} {verb} the {m} gap against {baseline} ({_signed(mean)} nats, 95% CI "
                         f"[{_signed(lo)}, {_signed(hi)}])")
    if not found:
        return (f"No gap differs from {baseline}'s distinguishably from zero (every 95% interval includes 0, or "
                "fewer than two seeds): no family is said to shrink either gap.")
    return "Distinguishable from zero (the 95% interval excludes 0): " + "; ".join(found) + "."


def plot_gaps(tables: dict[str, pd.DataFrame], out_dir: Path) -> str:
    """Per dataset, per variant: a bar from L[q] up to log p̂(x), split at L[q*] into the amortization gap
    (lower part) and the approximation gap (upper part), means over seeds; L[q*_FFG] as a tick."""
    tables = {d: t for d, t in tables.items() if t["n"].gt(0).any()}
    if not tables:
        raise SkipFigure("no completed run with gap figures")
    width = max(5.0, sum(1.1 * (t["n"] > 0).sum() + 1.5 for t in tables.values()))
    fig = new_figure(width, 4.2)
    axes = fig.subplots(1, len(tables), squeeze=False)[0]
    for ax, (dataset, t) in zip(axes, tables.items()):
        t = t[t["n"] > 0].reset_index(drop=True)
        x = range(len(t))
        lq, lopt, lpx = t["gap_elbo_mean"], t["elbo_local_opt_mean"], t["gap_iw_log_px_mean"]
        ax.bar(x, lopt - lq, bottom=lq, color="C1", label="amortization gap: L[q*] − L[q]")
        ax.bar(x, lpx - lopt, bottom=lopt, color="C0", label="approximation gap: log p̂(x) − L[q*]")
        ax.scatter(x, t["elbo_local_opt_ffg_mean"], marker="_", s=400, color="k", zorder=3, label="L[q*_FFG]")
        low, high = lq.min(), lpx.max()
        pad = max(0.5, 0.15 * (high - low))
        ax.set_ylim(low - pad, high + pad)
        ax.set_xticks(list(x), t["variant"], rotation=30 if len(t) > 3 else 0)
        ax.set_title(dataset, fontsize=9)
        ax.set_ylabel("nats per image (bar: L[q] to log p̂(x))")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3 if len(tables) > 1 else 2, fontsize=7)
    fig.suptitle("Inference gaps: mean over seeds (higher is better; shorter bars are tighter)", fontsize=9)
    return save(fig, out_dir, "inference_gaps")


def gaps_markdown(runs: pd.DataFrame, baseline: str, out_dir: Path, link: str = "") -> list[str]:
    """The report section ([] when no run has gap figures)."""
    if not has_gaps(runs):
        return []
    tables = gap_tables(runs, baseline)
    md = ["## Inference gaps (Cremer, Li & Duvenaud 2018)", ""]
    for dataset, table in tables.items():
        md += [f"### {dataset}", "", to_markdown(display_gap_table(table, baseline)).rstrip(), "",
               gap_sentence(table, baseline), ""]
    runs = with_gaps(runs)
    ok = completed(runs)
    ok = ok[ok["approximation_gap"].notna()]
    images = sorted({int(v) for v in ok["gap_images"].dropna()}) if "gap_images" in ok else []
    md += [f"On a seeded random subset of {'/'.join(map(str, images)) or '?'} test images per run, each variant "
           "at its best lr on validation. log p̂(x): per image the better IW bound (the run's k) of the encoder's "
           "q and the fitted q*; L[q]: the encoder's ELBO; L[q*]: the ELBO after fitting the family's per-image "
           "parameters (loc, scale, context) to each image with the decoder, prior and flow weights frozen; "
           "L[q*_FFG]: the same fit of a fully factorised Gaussian. approximation gap = log p̂(x) − L[q*], "
           "amortization gap = L[q*] − L[q] (their sum is log p̂(x) − L[q]). Active units: Cov_x(E_q[z_u]) > "
           "0.01 over the test images; mean KL: "
           f"E_x KL(q(z|x) ‖ p(z)). Δ = variant − {baseline}, paired by seed as in the versus table (below 0: a "
           "smaller gap).", ""]
    for caption, draw in (("Inference gaps per variant", lambda: plot_gaps(tables, out_dir)),
                          ("KL per latent unit", lambda: plot_kl_per_dim(runs, out_dir))):
        try:
            png = link + draw()  # `link`: out_dir relative to the report
            md += [f"![{caption}]({png}) (also `{png[:-4]}.pdf`)", ""]
        except SkipFigure as why:
            md += [f"{caption}: figure skipped ({why}).", ""]
    return md


def plot_kl_per_dim(runs: pd.DataFrame, out_dir: Path) -> str:
    """Per dataset, per variant: the KL of each latent unit (the encoder's Gaussian head against N(0, 1)),
    units sorted from most to least used within each run, then averaged over its runs."""
    ok = with_gaps(runs)
    ok = completed(ok)
    if "kl_per_dim" not in ok or ok["kl_per_dim"].isna().all():
        raise SkipFigure("no run with a KL per dimension")
    ok = ok[ok["kl_per_dim"].notna()]
    datasets = sorted(ok[DATASET].unique())
    fig = new_figure(max(5.0, 4.5 * len(datasets)), 3.6)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        sub = ok[ok[DATASET] == dataset]
        for i, label in enumerate(v for v in variant_order(runs) if v in set(sub["label"])):
            curves = [sorted(json.loads(v), reverse=True) for v in sub.loc[sub["label"] == label, "kl_per_dim"]]
            n = min(map(len, curves))
            mean = [sum(c[j] for c in curves) / len(curves) for j in range(n)]
            ax.plot(range(1, n + 1), mean, marker=".", color=f"C{i}", label=label)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("latent unit, sorted by KL")
        ax.set_ylabel("KL [nats]")
        ax.set_title(dataset, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("KL per latent unit of the encoder's Gaussian head vs N(0, 1), mean over seeds", fontsize=9)
    return save(fig, out_dir, "kl_per_dim")
