"""The family-by-dataset table on synthetic rows: one configuration per cell chosen on validation, mean ± sd
(ddof = 1) of its completed seeds, published values beside reproduction cells only, and its report section."""

from __future__ import annotations

import statistics

import pandas as pd

from bench.report import make_report
from bench.report.families import family_cells, family_table
from tests.test_report import quiet, row, write_results


def rows() -> list[dict]:
    out = []
    for seed, (px, elbo) in enumerate([(-80.1, -83.5), (-80.4, -83.1), (-80.3, -83.3)]):  # the reproduction
        out.append(row("o-snf", 5e-4, seed, val=-84.0, test_px=px, test_elbo=elbo, grid="sylvester-paper",
                       posterior="sylvester-orthogonal"))
    for seed, px in enumerate([-81.0, -81.6]):  # planar at two lrs: 1e-3 has the better validation ELBO
        out.append(row("planar", 1e-3, seed, val=-85.0, test_px=px, test_elbo=px - 4, posterior="planar"))
        out.append(row("planar", 1e-4, seed, val=-90.0, test_px=-70.0, test_elbo=-71.0, posterior="planar"))
    out.append(row("planar", 1e-3, 2, val=-85.0, test_px=-50.0, test_elbo=-51.0, posterior="planar",
                   status="diverged"))
    for seed, px in enumerate([-95.0, -96.0]):  # another dataset
        out.append(row("mf", 1e-3, seed, val=-100.0, test_px=px, test_elbo=px - 9, posterior="mean-field",
                       **{"data.dataset": "caltech101-silhouettes"}))
    return out


def test_cells_choose_on_validation_and_average_completed_seeds():
    cells = family_cells(pd.DataFrame(rows())).set_index(["family", "dataset"])
    osnf = cells.loc[("sylvester-orthogonal", "binarized-mnist")]
    assert osnf["n"] == 3 and osnf["log_px_mean"] == statistics.mean([-80.1, -80.4, -80.3])
    assert abs(osnf["log_px_sd"] - statistics.stdev([-80.1, -80.4, -80.3])) < 1e-12
    assert abs(osnf["elbo_sd"] - statistics.stdev([-83.5, -83.1, -83.3])) < 1e-12
    assert (osnf["published_log_px"], osnf["published_elbo"]) == (-80.22, -83.32)
    planar = cells.loc[("planar", "binarized-mnist")]
    assert planar["lr"] == 1e-3 and planar["n"] == 2 and planar["log_px_mean"] == -81.3  # not lr 1e-4's -70
    assert pd.isna(planar["published_log_px"])  # not a reproduction config
    assert cells.loc[("mean-field", "caltech101-silhouettes")]["log_px_mean"] == -95.5


def test_wide_table_has_families_as_rows_and_datasets_as_columns():
    table = family_table(pd.DataFrame(rows()))
    assert list(table.index) == ["mean-field", "planar", "sylvester-orthogonal"]  # POSTERIORS order
    assert list(table.columns) == ["binarized-mnist log p(x)", "binarized-mnist ELBO", "binarized-mnist run",
                                   "caltech101-silhouettes log p(x)", "caltech101-silhouettes ELBO",
                                   "caltech101-silhouettes run"]
    assert table.loc["sylvester-orthogonal", "binarized-mnist log p(x)"] == "-80.27 ± 0.15 (published -80.22)"
    assert table.loc["sylvester-orthogonal", "binarized-mnist ELBO"] == "-83.30 ± 0.20 (published -83.32)"
    assert table.loc["planar", "binarized-mnist log p(x)"] == "-81.30 ± 0.42"
    assert table.loc["planar", "binarized-mnist run"] == "g/planar lr 0.001, 2 seeds"
    assert table.loc["mean-field", "binarized-mnist log p(x)"] == "–"
    assert table.loc["planar", "caltech101-silhouettes ELBO"] == "–"


def test_report_has_the_family_section(tmp_path):
    path = make_report(write_results(tmp_path / "results", rows()), tmp_path / "report", console=quiet())
    text = path.read_text()
    section = text.split("## Posterior families by dataset")[1]
    assert "| sylvester-orthogonal | -80.27 ± 0.15 (published -80.22) |" in section


def test_a_run_with_another_prior_gets_its_own_row():
    """A posterior comparison holds the prior fixed: a VampPrior run with a mean-field posterior and a better
    validation ELBO fills a 'mean-field + prior vamp' row, never the plain mean-field cell."""
    extra = [row("vamp", 1e-3, seed, val=-90.0, test_px=-91.0, test_elbo=-93.0, posterior="mean-field",
                 prior="vamp", **{"data.dataset": "caltech101-silhouettes"}) for seed in range(2)]
    cells = family_cells(pd.DataFrame(rows() + extra)).set_index(["family", "dataset"])
    assert cells.loc[("mean-field", "caltech101-silhouettes"), "log_px_mean"] == -95.5
    assert cells.loc[("mean-field + prior vamp", "caltech101-silhouettes"), "log_px_mean"] == -91.0
