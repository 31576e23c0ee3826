"""The family-by-dataset table, like the Sylvester-flows paper's: rows = posterior families, columns = datasets,
cells = test IW log p(x) and test ELBO, mean ± sd over completed seeds, with the published value beside ours
where the runs are a reproduction config's.

One configuration fills a cell: among the completed (grid, variant, lr) groups of that family on that dataset,
the one with the highest mean validation ELBO (never chosen on test figures); the cell names it.
"""

from __future__ import annotations

import pandas as pd

from bench.report.reproductions import PUBLISHED
from bench.report.tables import completed, fmt_mean_sd, fmt_num, to_markdown
from vae_core.posteriors import POSTERIORS

DATASET_COLUMN = "data.dataset"
GROUP = ["grid", "variant", "lr"]


def _family_order(families) -> list[str]:
    """Registered families in `POSTERIORS` order, then any others by name."""
    known = [f for f in POSTERIORS if f in set(families)]
    return known + sorted(set(families) - set(known))


def _family_label(runs: pd.DataFrame) -> pd.Series:
    """The row a run belongs to: its posterior family, with the prior named when it is not the standard one (a
    posterior comparison holds the prior fixed: a VampPrior run never fills the plain mean-field row)."""
    if "prior" not in runs.columns:
        return runs["posterior"]
    prior = runs["prior"].fillna("standard").replace("", "standard")
    return runs["posterior"].where(prior == "standard", runs["posterior"] + " + prior " + prior)


def family_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Long form, one row per (family, dataset): the chosen group, its seeds and its statistics, and the
    published log p(x) / ELBO where that group reproduces a published result on that dataset."""
    done = completed(runs)
    if DATASET_COLUMN not in done.columns:
        done = done.assign(**{DATASET_COLUMN: "?"})
    published = {(p.grid, p.variant, p.dataset): p for p in PUBLISHED}
    done = done.assign(family=_family_label(done))
    rows = []
    for (family, dataset), cell in done.groupby(["family", DATASET_COLUMN], sort=False):
        groups = cell.groupby(GROUP, dropna=False)
        (grid, variant, lr), chosen = max(groups, key=lambda kv: (kv[1]["val_elbo"].mean(), -len(kv[1])))
        entry = published.get((grid, variant, dataset))
        rows.append({
            "family": family, "dataset": dataset, "grid": grid, "variant": variant, "lr": lr, "n": len(chosen),
            "log_px_mean": chosen["test_iw_log_px"].mean(), "log_px_sd": chosen["test_iw_log_px"].std(ddof=1),
            "elbo_mean": chosen["test_elbo"].mean(), "elbo_sd": chosen["test_elbo"].std(ddof=1),
            "published_log_px": entry.log_px if entry else float("nan"),
            "published_elbo": entry.elbo if entry else float("nan"),
        })
    return pd.DataFrame(rows, columns=["family", "dataset", "grid", "variant", "lr", "n", "log_px_mean",
                                       "log_px_sd", "elbo_mean", "elbo_sd", "published_log_px", "published_elbo"])


def _figure(mean: float, sd: float, published: float) -> str:
    ours = fmt_mean_sd(mean, sd)
    return ours if pd.isna(published) else f"{ours} (published {fmt_num(published)})"


def family_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Wide form for display: index = family, per dataset (by name) two columns ("<dataset> log p(x)", "<dataset> ELBO")
    and one naming the chosen configuration and its seeds."""
    cells = family_cells(runs)
    if cells.empty:
        return pd.DataFrame()
    datasets = sorted(set(cells["dataset"]))
    table = pd.DataFrame(index=pd.Index(_family_order(cells["family"]), name="family"))
    for dataset in datasets:
        mine = cells[cells["dataset"] == dataset].set_index("family")

        def column(fmt) -> list[str]:
            return [fmt(mine.loc[f]) if f in mine.index else "–" for f in table.index]

        table[f"{dataset} log p(x)"] = column(lambda r: _figure(r.log_px_mean, r.log_px_sd, r.published_log_px))
        table[f"{dataset} ELBO"] = column(lambda r: _figure(r.elbo_mean, r.elbo_sd, r.published_elbo))
        table[f"{dataset} run"] = column(
            lambda r: f"{r.grid}/{r.variant} lr {r.lr:g}, {int(r.n)} seed{'s' if r.n != 1 else ''}")
    return table


def family_markdown(runs: pd.DataFrame) -> list[str]:
    """The report section; empty when the completed runs hold fewer than two (family, dataset) cells."""
    table = family_table(runs)
    if table.empty or table.shape[0] * (table.shape[1] // 3) < 2:
        return []
    return ["## Posterior families by dataset", "",
            to_markdown(table.reset_index()).rstrip(), "",
            "Test IW log p(x) and test ELBO in nats per image, mean ± sd over the completed seeds of one "
            "configuration per cell: the (grid, variant, lr) with the highest mean validation ELBO for that family "
            "on that dataset (named in the `run` column). `published`: the value the reproduced paper reports for "
            "that configuration (see the reproduction section for its source and whether it was verified).", ""]
