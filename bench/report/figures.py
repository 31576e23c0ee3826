"""Report plots (seaborn on Agg Figure objects, so nothing needs a display): PNG and PDF each.

Each `plot_*` function takes the run table (and curves), writes `<name>.png` and `<name>.pdf` into `out_dir`
and returns the PNG's file name, or raises `SkipFigure` with the reason when there is nothing to draw.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.report.tables import best_lr_table, completed, fmt_lr, several_lrs, variant_order
from bench.report.versus import COST_AXES

STYLE = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}


class SkipFigure(Exception):
    """A figure that cannot be drawn from these results (the message says why)."""


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas: headless
    return fig


def save(fig: Figure, out_dir: Path, name: str, pdf: bool = True) -> str:
    """Write `name`.png (and `name`.pdf) and release the figure; returns the PNG file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out_dir / f"{name}.png", dpi=150)
        if pdf:
            fig.savefig(out_dir / f"{name}.pdf")
    finally:
        fig.clear()
    return f"{name}.png"


def _tick_labels(ax, labels: list[str]) -> None:
    """Rotate variant names when they would collide."""
    if len(labels) > 4 or sum(len(s) for s in labels) > 40:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")


def _k_label(runs: pd.DataFrame) -> str:
    ks = sorted({int(k) for k in completed(runs)["iw_samples"].dropna()})
    return f", k={'/'.join(map(str, ks))}" if ks else ""


def plot_log_px(runs: pd.DataFrame, out_dir: Path) -> str:
    """Test IW log p(x) per variant: mean ± sd over seeds (seeds as faint dots), hued by lr when several."""
    done = completed(runs).dropna(subset=["test_iw_log_px"]).copy()
    if done.empty:
        raise SkipFigure("no completed run with a test log p(x)")
    order = [v for v in variant_order(runs) if v in set(done["label"])]
    hue = hue_order = None
    dodge: float | bool = False
    if several_lrs(runs):
        done["lr "] = done["lr"].map(fmt_lr)
        hue = "lr "
        hue_order = [fmt_lr(v) for v in sorted(done["lr"].dropna().unique())]
        dodge = 0.8 - 0.8 / len(hue_order) if len(hue_order) > 1 else False
    with sns.axes_style("whitegrid"):
        fig = new_figure(max(5.5, 1.3 * len(order) * (len(hue_order or [1]) ** 0.5) + 2), 4.0)
        ax = fig.add_subplot()
        sns.stripplot(data=done, x="label", y="test_iw_log_px", hue=hue, order=order, hue_order=hue_order,
                      dodge=bool(dodge), alpha=0.35, size=4, jitter=0.08, legend=False, ax=ax,
                      palette="deep" if hue else None, color=None if hue else "0.4")
        sns.pointplot(data=done, x="label", y="test_iw_log_px", hue=hue, order=order, hue_order=hue_order,
                      errorbar="sd", capsize=0.12, dodge=dodge, linestyle="none", markers="o", markersize=6,
                      err_kws={"linewidth": 1.5}, ax=ax,
                      palette="deep" if hue else None, color=None if hue else "C0")
        ax.set_xlabel("variant")
        ax.set_ylabel(f"test IW log p(x) [nats]{_k_label(runs)}")
        ax.set_title("Test log p(x): mean ± sd over seeds, dots = seeds\n(higher is better)", fontsize=9)
        _tick_labels(ax, order)
        if hue:
            ax.legend(title="lr", fontsize=8, title_fontsize=8)
    return save(fig, out_dir, "log_px_by_variant")


def _best_lr_runs(runs: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frame` (with label and lr) at each variant's best lr on validation."""
    best = best_lr_table(runs).dropna(subset=["lr"])
    keys = set(zip(best["variant"], best["lr"]))
    return frame[[k in keys for k in zip(frame["label"], frame["lr"])]]


def plot_learning_curves(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> str:
    """Validation ELBO vs step, one line per variant (its best lr), mean over completed seeds, band = sd."""
    if curves.empty or not {"run_id", "step", "elbo"} <= set(curves.columns):
        raise SkipFigure("no learning curves in the results folder")
    valid = curves[curves["split"] == "valid"] if "split" in curves.columns else curves
    meta = completed(runs)[["run_id", "label", "lr"]]
    data = valid.merge(meta, on="run_id", how="inner").dropna(subset=["elbo"])
    data = _best_lr_runs(runs, data)
    if data.empty:
        raise SkipFigure("no validation curve of a completed run")
    order = [v for v in variant_order(runs) if v in set(data["label"])]
    with sns.axes_style("whitegrid"):
        fig = new_figure(6.5, 4.0)
        ax = fig.add_subplot()
        sns.lineplot(data=data, x="step", y="elbo", hue="label", hue_order=order, errorbar="sd", marker="o",
                     markersize=4, ax=ax)
        # Early evaluations can be far below the rest and flatten the interesting end of the curves.
        means = data.groupby(["label", "step"])["elbo"].agg(["mean", "std"]).reset_index()
        late = means[means["step"] >= means["step"].median()]
        lo_all, lo_late = means["mean"].min(), (late["mean"] - late["std"].fillna(0)).min()
        span = means["mean"].max() - lo_late
        clipped = lo_all < lo_late - 3 * max(span, 1.0)
        if clipped:
            ax.set_ylim(bottom=lo_late - 1.0 * max(span, 1.0))
        ax.set_xlabel("training step")
        ax.set_ylabel("validation ELBO [nats]")
        title = "Validation ELBO (mean over seeds, band = sd"
        title += "; each variant at its best lr)" if several_lrs(runs) else ")"
        if clipped:
            title += "\nearly steps below the axis are clipped"
        ax.set_title(title, fontsize=9)
        ax.legend(title="variant", fontsize=8, title_fontsize=8)
    return save(fig, out_dir, "learning_curves")


def plot_throughput(runs: pd.DataFrame, out_dir: Path) -> str:
    """Train examples/s per variant: mean ± sd over completed runs (runs as dots)."""
    done = completed(runs).dropna(subset=["train_examples_per_s"])
    if done.empty:
        raise SkipFigure("no completed run with a throughput")
    order = [v for v in variant_order(runs) if v in set(done["label"])]
    with sns.axes_style("whitegrid"):
        fig = new_figure(max(5.5, 1.2 * len(order) + 2), 4.0)
        ax = fig.add_subplot()
        sns.barplot(data=done, x="label", y="train_examples_per_s", order=order, errorbar="sd", capsize=0.15,
                    color="C0", alpha=0.75, ax=ax, err_kws={"linewidth": 1.2})
        sns.stripplot(data=done, x="label", y="train_examples_per_s", order=order, color="0.2", size=4,
                      jitter=0.08, ax=ax)
        ax.set_xlabel("variant")
        ax.set_ylabel("train examples / s")
        ax.set_ylim(bottom=0)  # an sd bar can reach below zero; throughput cannot
        ax.set_title("Training throughput: mean ± sd over runs, dots = runs", fontsize=9)
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
        _tick_labels(ax, order)
    return save(fig, out_dir, "throughput")


def plot_tradeoff(runs: pd.DataFrame, out_dir: Path) -> str:
    """Test log p(x) vs train examples/s, one point per variant at its best lr (chosen on validation)."""
    best = best_lr_table(runs).dropna(subset=["log_px_mean", "examples_per_s"])
    if best.empty:
        raise SkipFigure("no variant with a completed run")
    with sns.axes_style("whitegrid"):
        fig = new_figure(6.0, 4.2)
        ax = fig.add_subplot()
        palette = sns.color_palette("deep", len(best))
        for color, (_, r) in zip(palette, best.iterrows()):
            ax.errorbar(r["examples_per_s"], r["log_px_mean"],
                        yerr=None if math.isnan(r["log_px_sd"]) else r["log_px_sd"],
                        fmt="o", color=color, capsize=3, markersize=7)
            text = r["variant"] + (f" (lr {fmt_lr(r['lr'])})" if several_lrs(runs) else "")
            ax.annotate(text, (r["examples_per_s"], r["log_px_mean"]), xytext=(6, 6), textcoords="offset points",
                        fontsize=8, color=color)
        xs = best["examples_per_s"].to_numpy()
        if len(xs) > 1 and xs.min() > 0 and xs.max() / xs.min() > 20:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
        # Room for the annotations on the right and top.
        x0, x1 = ax.get_xlim()
        ax.set_xlim(x0, x1 + 0.15 * (x1 - x0) if ax.get_xscale() == "linear" else x1 * 1.5)
        y0, y1 = ax.get_ylim()
        ax.set_ylim(y0, y1 + 0.08 * (y1 - y0))
        ax.set_xlabel("train examples / s (mean over seeds)")
        ax.set_ylabel(f"test IW log p(x) [nats]{_k_label(runs)}")
        ax.set_title("Speed vs likelihood: each variant at its best lr on validation, bars = sd", fontsize=9)
    return save(fig, out_dir, "tradeoff")



def versus_cost_axis(table: pd.DataFrame, cost: str) -> tuple[str, str]:
    """(the cost: 'flops' or 'seconds', a note) for the versus figures: FLOPs unless the rows have no counts
    (results written before counting), then seconds, and the note says so."""
    if cost == "flops" and not table["flops_ratio"].notna().any():
        return "seconds", "no run has counted FLOPs (results written before counting): cost axis = seconds"
    return cost, ""


def _versus_panel(ax, table: pd.DataFrame, metric: str, ylabel: str, palette: dict[str, tuple],
                  cost: str = "flops") -> None:
    """Δ `metric` with its 95% interval against relative training cost (`COST_AXES[cost]`); the reference at
    (1, 0)."""
    column, xlabel = COST_AXES[cost]
    ax.axhline(0.0, color="0.3", linewidth=1.0, zorder=1)
    ax.axvline(1.0, color="0.6", linewidth=0.8, linestyle=":", zorder=1)
    for _, r in table.iterrows():
        x, y = r[column], r[f"{metric}_mean"]
        if math.isnan(x) or math.isnan(y):
            continue
        color = palette[r["variant"]]
        if r["pairing"] == "baseline":
            ax.plot([x], [y], marker="s", markersize=8, color=color, zorder=3)
            ax.annotate(f"{r['variant']}\n(reference)", (x, y), xytext=(0, -10), textcoords="offset points",
                        fontsize=8, color=color, ha="center", va="top")
            continue
        lo, hi = r[f"{metric}_lo"], r[f"{metric}_hi"]
        yerr = None if math.isnan(lo) else [[y - lo], [hi - y]]
        ax.errorbar([x], [y], yerr=yerr, fmt="o", color=color, capsize=4, markersize=7, zorder=3)
        if r["pairing"] == "welch":
            note = f"unpaired, {int(r['n_variant'])} vs {int(r['n_baseline'])} seeds"
        else:
            note = f"{int(r['n'])} pair{'s' if r['n'] != 1 else ''}"
        note += ", no CI" if yerr is None else ""
        ax.annotate(f"{r['variant']} ({note})", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8,
                    color=color)
    x0, x1 = ax.get_xlim()
    ax.set_xlim(min(x0, 1.0 - 0.1 * (x1 - x0)), x1 + 0.25 * (x1 - x0))
    y0, y1 = ax.get_ylim()
    ax.set_ylim(min(y0, -0.15 * (y1 - y0)), y1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def plot_versus(table: pd.DataFrame, baseline: str, out_dir: Path, runs: pd.DataFrame, cost: str = "flops") -> str:
    """Δ test IW log p(x) and Δ test ELBO vs the baseline (95% CI) against relative cost (`COST_AXES[cost]`),
    one point per variant at its best lr on validation (`versus_table` rows)."""
    drawable = table.dropna(subset=[COST_AXES[cost][0], "log_px_mean"])
    if len(drawable) < 2:
        raise SkipFigure("no variant besides the baseline has completed runs with a training time")
    palette = dict(zip(table["variant"], sns.color_palette("deep", len(table))))
    with sns.axes_style("whitegrid"):
        fig = new_figure(10.0, 4.2)
        for i, (metric, name) in enumerate((("log_px", f"Δ test IW log p(x) [nats]{_k_label(runs)}"),
                                            ("elbo", "Δ test ELBO [nats]"))):
            ax = fig.add_subplot(1, 2, i + 1)
            _versus_panel(ax, drawable, metric, name, palette, cost)
        fig.suptitle(f"Versus {baseline}: difference with 95% CI (above 0 = higher than the reference) against "
                     f"relative {'counted FLOPs' if cost == 'flops' else 'seconds'}; each variant at its best lr "
                     "on validation", fontsize=9)
    return save(fig, out_dir, "versus")


def plot_versus_by_lr(table: pd.DataFrame, baseline: str, out_dir: Path, runs: pd.DataFrame,
                      cost: str = "flops") -> str:
    """Δ test IW log p(x) (95% CI) against relative cost (`COST_AXES[cost]`), one panel per lr, each variant
    compared with the baseline at the same lr (`versus_by_lr` rows)."""
    drawable = table.dropna(subset=[COST_AXES[cost][0], "log_px_mean"])
    if drawable.empty:
        raise SkipFigure("no lr at which a variant and the baseline both have completed runs")
    lrs = sorted(drawable["lr"].unique())
    order = [baseline] + [v for v in variant_order(runs) if v != baseline]
    palette = dict(zip(order, sns.color_palette("deep", len(order))))
    with sns.axes_style("whitegrid"):
        fig = new_figure(4.2 * len(lrs) + 0.8, 4.0)
        axes = fig.subplots(1, len(lrs), sharey=True, squeeze=False)[0]
        for ax, lr in zip(axes, lrs):
            at = drawable[drawable["lr"] == lr]
            reference = pd.DataFrame([{"variant": baseline, "pairing": "baseline", "step_ratio": 1.0,
                                       "flops_ratio": 1.0, "log_px_mean": 0.0, "n": at["n"].max()}])
            _versus_panel(ax, pd.concat([reference, at], ignore_index=True), "log_px",
                          f"Δ test IW log p(x) [nats]{_k_label(runs)}", palette, cost)
            ax.set_title(f"lr {fmt_lr(lr)}", fontsize=9)
        fig.suptitle(f"Versus {baseline} at the same lr: Δ test IW log p(x) with 95% CI against relative "
                     f"{'counted FLOPs' if cost == 'flops' else 'seconds'}", fontsize=9)
    return save(fig, out_dir, "versus_by_lr")
