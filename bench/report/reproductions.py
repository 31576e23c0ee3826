"""Reproductions: runs of a `configs/reproduce/*.toml` grid against the published value they reproduce.

`PUBLISHED` holds, per (grid, variant) of a shipped reproduce config, the published test log p(x), its
source and how our protocol differs. `reproduction_table` sets the measured figures of completed runs
(mean ± sd over seeds, and the difference with a 95% t-interval) beside it, and says how far unfinished
runs got (epoch reached, from their curves). Nothing measured is mixed into the published-numbers section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from bench.report.stats import t_quantile
from bench.report.tables import fmt_mean_sd, fmt_num


@dataclass(frozen=True)
class Published:
    grid: str
    variant: str
    log_px: float  # test log p(x), nats per image (negative)
    source: str
    protocol: str  # training length as published
    notes: str  # how our protocol differs (see the config file's comment for the whole list)
    dataset: str = "binarized-mnist"  # data.dataset of the reproduce config
    iw_samples: int = 5000  # eval.iw_samples of the reproduce config (the published test k)
    elbo: float = math.nan  # published test ELBO, nats per image (negative), where the source gives one
    verified: bool = False  # the value was checked against the primary source's text

    @property
    def confirmed(self) -> bool:
        """False where the published value could not be confirmed from the paper (log_px is NaN)."""
        return not math.isnan(self.log_px)


_IWAE_NOTES = ("Adam β1 0.9 as in the paper (the code runs 0.99, second moment from 1); batch mean, reshuffled "
               "every epoch (code: sum, fixed order); Glorot per seed, zero output bias (code: one init seed, "
               "output bias = logit of pixel means); one encoder head for mean and log-σ (code: two); exact 10^(−i/7) "
               "stages (code: rounded)")
_VAMP_NOTES = ("warm-up linear per step from 0 (code: per-epoch staircase from 0.01); patience counted from the "
               "start (code: after warm-up); exact Bernoulli logits (code: probabilities clamped to [1e-5, 1−1e-5]); "
               "one encoder head, so gradient normalization treats mean and log-variance weights as one tensor "
               "(code: two)")

PUBLISHED: tuple[Published, ...] = (
    Published("iwae-paper", "vae-k1", -88.71, "Burda et al. 2016, App. D (fixed binarization)", "3280 epochs",
              _IWAE_NOTES),
    Published("iwae-paper", "iwae-k5", -87.63, "Burda et al. 2016, App. D (fixed binarization)", "3280 epochs",
              _IWAE_NOTES),
    Published("iwae-paper", "iwae-k50", -87.10, "Burda et al. 2016, App. D (fixed binarization)", "3280 epochs",
              _IWAE_NOTES),
    Published("vampprior-paper", "standard", -88.56,
              "Tomczak & Welling 2018, one-layer VAE, standard prior (value not re-checked against the paper text)",
              "≤ 2000 epochs, early stopping 50", _VAMP_NOTES),
    Published("vampprior-paper", "vamp", -85.57, "Tomczak & Welling 2018, one-layer VAE, VampPrior K=500",
              "≤ 2000 epochs, early stopping 50", _VAMP_NOTES),
    *(Published(grid, variant, math.nan, f"Tomczak & Welling 2018, Table 2, {what} (UNVERIFIED: the value could not "
                "be read from the paper here)", "≤ 2000 epochs, early stopping 50", notes, dataset)
      for grid, dataset, notes in (
          ("vampprior-caltech", "caltech101-silhouettes", _VAMP_NOTES + "; pseudo-inputs drawn around 0.05 "
           "(code: 0.8)"),
          ("vampprior-frey", "frey-faces", _VAMP_NOTES + "; pseudo-inputs drawn around 0.05 (code: 0.8); "
           "discretized logistic with 1/255 bins and tailed edge bins (code: 1/256 bins, no tails)"))
      for variant, what in (("standard", "one-layer VAE, standard prior"), ("vamp", "one-layer VAE, VampPrior K=500"))),
    *(Published("vampprior-hvae", variant, math.nan, f"Tomczak & Welling 2018, Table 2, HVAE (L = 2), {what} "
                "(UNVERIFIED: the value could not be read from the paper here)", "≤ 2000 epochs, early stopping 50",
                _VAMP_NOTES + "; q(z1|x, z2) and p(x|z1, z2) join their inputs by a sum at the first gated layer "
                "(code: separate gated towers, concatenated)")
      for variant, what in (("standard", "standard prior"), ("vamp", "VampPrior K=500 on z2"))),
)

_SYLVESTER_NOTES = ("warm-up linear per step from 0 (code: per-epoch staircase from 0.01); exact Bernoulli logits "
                    "(code: BCELoss of probabilities); IAF context latent_dim wide, ReLU MADEs (code: 320 wide, ELU); "
                    "each Q orthogonalised until it converges on its own (code: until the batch's worst does); "
                    "flow counts, M and H as recalled from the paper")
_SYLVESTER_SOURCE = ("van den Berg et al. 2018, Table {table} (values recalled, NOT verified against the paper text; "
                     "mean ± sd over 3 runs there)")
# variant: (MNIST -ELBO, MNIST NLL, Caltech -ELBO, Caltech NLL), the tables' means as we recall them
_SYLVESTER_TABLE = {"no-flow": (86.55, 82.14, 110.80, 99.62), "planar": (86.06, 81.91, 109.66, 98.53),
                    "iaf": (84.20, 80.79, 111.58, 99.92), "o-snf": (83.32, 80.22, 99.00, 89.58),
                    "h-snf": (83.40, 80.29, 99.00, 89.25), "t-snf": (83.40, 80.28, 99.19, 89.41)}
PUBLISHED += tuple(
    Published(grid, variant, -nll, _SYLVESTER_SOURCE.format(table=table), "≤ 2000 epochs, early stopping 100 after "
              "a 100-epoch warm-up", _SYLVESTER_NOTES, dataset=dataset, iw_samples=k, elbo=-neg_elbo)
    for grid, dataset, k, table, offset in (("sylvester-paper", "binarized-mnist", 5000, 1, 0),
                                            ("sylvester-paper-caltech", "caltech101-silhouettes", 2000, 2, 2))
    for variant, values in _SYLVESTER_TABLE.items()
    for neg_elbo, nll in [values[offset:offset + 2]])

REPRODUCED = frozenset((e.grid, e.variant) for e in PUBLISHED)

COLUMNS = ["reproduces", "published log p(x)", "measured log p(x)", "Δ (95% CI)", "seeds", "progress", "source",
           "protocol differences"]


def _run_label(run_id: str, entry: Published) -> bool:
    return run_id.startswith(f"{entry.grid}-{entry.variant}-seed")


def is_reproduction_run(run_id: str) -> bool:
    """Whether a run id (a curve file's) belongs to a published result's reproduction."""
    return any(_run_label(run_id, entry) for entry in PUBLISHED)


def benchmark_curves(curves: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The curve rows of runs that are not reproductions: neither a reproduction row of `runs` nor, for a run
    without a row yet, a reproduction's run id."""
    if curves.empty or "run_id" not in curves.columns:
        return curves
    rows = set(runs.loc[reproduction_rows(runs), "run_id"]) if runs is not None and not runs.empty else set()
    return curves[~curves["run_id"].map(lambda r: r in rows or is_reproduction_run(r))]


def reproduction_rows(runs: pd.DataFrame) -> pd.Series:
    """Boolean mask of the rows of `runs` that reproduce a published result: they are compared with their
    published value only, never with the benchmark's variants (another protocol)."""
    if runs.empty or not {"grid", "variant"} <= set(runs.columns):
        return pd.Series(False, index=runs.index)
    return pd.Series([(g, v) in REPRODUCED for g, v in zip(runs["grid"], runs["variant"])], index=runs.index)


def _progress(curves: pd.DataFrame) -> str:
    """'epoch 12.0 (valid ELBO −101.3)' of the latest validation of each unfinished run, joined."""
    parts = []
    for run_id, c in curves[curves["split"] == "valid"].groupby("run_id", sort=True):
        last = c.sort_values("step").iloc[-1]
        where = (f"epoch {last['epoch']:.0f}" if "epoch" in c.columns and pd.notna(last["epoch"])
                 else f"step {int(last['step'])}")
        parts.append(f"{where} (valid ELBO {fmt_num(last['elbo'])})")
    return "; ".join(parts)


def _latest_protocol(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows run with the config of the most recently started one (all resolved keys but the seed), and
    how many rows of other configs (an edited reproduce file) were left out."""
    keys = [c for c in rows.columns if c.split(".")[0] in ("model", "train", "data", "eval") and c != "train.seed"]
    if rows.empty or not keys:
        return rows, 0
    protocol = rows[keys].astype(str).agg("|".join, axis=1)
    if "started_at" in rows.columns:
        started = pd.to_datetime(rows["started_at"], errors="coerce", utc=True)
        protocol = protocol.loc[started.sort_values(na_position="first").index]
    same = (protocol == protocol.iloc[-1]).reindex(rows.index)
    return rows[same], int((~same).sum())


def reproduction_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per published result with runs in this folder (finished or not), in `PUBLISHED` order. Runs of
    an earlier version of a reproduce file (another resolved config) are left out and counted."""
    finished_ids = set(runs["run_id"]) if "run_id" in runs.columns else set()
    rows = []
    for entry in PUBLISHED:
        mine, other_configs = _latest_protocol(runs[(runs["grid"] == entry.grid) & (runs["variant"] == entry.variant)]
                                               if not runs.empty else runs)
        done = mine[mine["status"] == "completed"].sort_values("seed") if not mine.empty else mine
        unfinished = (curves[curves["run_id"].map(lambda r: _run_label(r, entry) and r not in finished_ids)]
                      if not curves.empty and "run_id" in curves.columns else curves)
        if mine.empty and unfinished.empty and not other_configs:
            continue
        values = done["test_iw_log_px"].dropna().tolist() if not done.empty else []
        n = len(values)
        mean = sum(values) / n if n else math.nan
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
        progress = []
        if n:
            epochs = done["epochs_done"].dropna() if "epochs_done" in done.columns else pd.Series(dtype=float)
            progress.append(f"{n} completed" + (f" (epochs {', '.join(f'{e:.0f}' for e in epochs)})"
                                                if len(epochs) else ""))
        if len(mine) > n:
            progress.append(f"{len(mine) - n} {'/'.join(sorted(set(mine['status']) - {'completed'}))}")
        if not unfinished.empty:
            progress.append(f"{unfinished['run_id'].nunique()} in progress: {_progress(unfinished)}")
        if other_configs:
            progress.append(f"{other_configs} run(s) of another config of this reproduction left out")
        rows.append({
            "reproduces": f"{entry.grid}/{entry.variant}",
            "published log p(x)": fmt_num(entry.log_px) if entry.confirmed else "not confirmed",
            "measured log p(x)": fmt_mean_sd(mean, sd) if n else "–",
            "Δ (95% CI)": (f"{mean - entry.log_px:+.2f}" + (f" [{mean - entry.log_px - half:+.2f}, "
                                                            f"{mean - entry.log_px + half:+.2f}]" if n > 1 else "")
                           if n and entry.confirmed else "–"),
            "seeds": str(n), "progress": "; ".join(progress), "source": f"{entry.source}; {entry.protocol}",
            "protocol differences": entry.notes,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def reproduction_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Validation curves of every reproduce run (finished or not), with its `reproduces` label."""
    if curves.empty or not {"run_id", "split", "step", "epoch", "elbo"} <= set(curves.columns):
        return pd.DataFrame()
    valid = curves[curves["split"] == "valid"].dropna(subset=["epoch", "elbo"])
    frames = [valid[valid["run_id"].map(lambda r, e=entry: _run_label(r, e))].assign(
        reproduces=f"{entry.grid}/{entry.variant}") for entry in PUBLISHED]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_reproduction_progress(curves: pd.DataFrame, out_dir, runs: pd.DataFrame | None = None) -> str:
    """Validation ELBO vs epoch of each reproduce run: how far each got and where it is heading; a star marks
    the checkpoint a completed run (a row of `runs`) was tested with."""
    from bench.report.figures import SkipFigure, new_figure, save

    tested: dict[str, int] = {}
    if runs is not None and not runs.empty and {"run_id", "status", "best_step"} <= set(runs.columns):
        done = runs[runs["status"] == "completed"].dropna(subset=["best_step"])
        tested = dict(zip(done["run_id"], done["best_step"].astype(int)))
    data = reproduction_curves(curves)
    if data.empty:
        raise SkipFigure("no reproduction curve with epochs")
    groups = list(dict.fromkeys(data["reproduces"]))
    fig = new_figure(7.0, 2.6 * len(dict.fromkeys(g.split("/")[0] for g in groups)) + 0.6)
    grids = list(dict.fromkeys(g.split("/")[0] for g in groups))
    axes = fig.subplots(len(grids), 1, squeeze=False)[:, 0]
    for ax, grid in zip(axes, grids):
        mine = data[data["reproduces"].str.startswith(grid + "/")]
        for (label, run_id), c in mine.groupby(["reproduces", "run_id"], sort=True):
            c = c.sort_values("epoch")
            name = f"{label.split('/')[1]} seed {run_id.split('-seed')[1].split('-')[0]}"
            at = c[c["step"] == tested.get(run_id, -1)]
            line, = ax.plot(c["epoch"], c["elbo"], marker="o", markersize=2, linewidth=1,
                            label=name + (", tested at ★" if not at.empty else ""))
            if not at.empty:
                ax.plot(at["epoch"], at["elbo"], marker="*", markersize=11, linestyle="none",
                        color=line.get_color(), markeredgecolor="black", markeredgewidth=0.5)
        latest = mine.sort_values("epoch").groupby("run_id")["elbo"].last()
        low = min(mine["elbo"].quantile(0.1), latest.min())  # early (warm-up) epochs off the axis, never a run
        high = mine["elbo"].max()
        ax.set_ylim(low - 0.1 * (high - low + 1), high + 0.08 * (high - low + 1))
        ax.set_title(f"{grid}: validation ELBO by epoch (the earliest, lowest points may be below the axis)",
                     fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation ELBO [nats]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, out_dir, "reproduction_progress")


def reproduction_markdown(table: pd.DataFrame) -> list[str]:
    from bench.report.tables import to_markdown

    return ["## Reproductions: measured here vs published, same protocol", "",
            to_markdown(table).rstrip(), "",
            "Measured: test IW log p(x) (the published k) of completed runs, mean ± sd over seeds; Δ = measured − "
            "published in nats (above 0: higher likelihood than published), with a 95% Student-t interval over "
            "seeds. Unfinished runs are not in the statistics; `progress` gives the epoch each reached and its "
            "latest validation ELBO. Each config in `configs/reproduce/` lists its source and every protocol "
            "detail we could not verify or match.", ""]
