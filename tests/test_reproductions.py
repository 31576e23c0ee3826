"""The reproduction table: measured figures of a reproduce grid's completed runs beside the published value
(hand-computed mean, sd, difference and t-interval), unfinished runs shown by the epoch they reached, and
every shipped reproduce config resolving to the published protocol with a published entry."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from bench.grid.files import load_grid
from bench.report import make_report
from bench.report import figures
from bench.report.reproductions import PUBLISHED, plot_reproduction_progress, reproduction_table
from tests.test_report import quiet, row, write_results

REPO = Path(__file__).resolve().parents[1]
REPRODUCE = sorted((REPO / "configs" / "reproduce").glob("*.toml"))


def in_progress_curves(root: Path, run_id: str, epochs: list[int], elbos: list[float]) -> None:
    (root / "curves").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"run_id": run_id, "step": [e * 500 for e in epochs], "epoch": [float(e) for e in epochs],
                  "split": "valid", "elbo": elbos, "reconstruction": math.nan, "kl": math.nan,
                  "iw_log_px": math.nan, "train_examples_per_s": 1.0, "wall_seconds": 1.0}
                 ).to_parquet(root / "curves" / f"{run_id}.parquet", index=False)


def test_table_sets_measured_beside_published_and_reports_unfinished_runs(tmp_path):
    measured = [-88.2, -88.9, -88.4]
    rows = [row("standard", 5e-4, s, val=-90.0, test_px=v, test_elbo=-91.0, grid="vampprior-paper",
                epochs_done=600.0 + s) for s, v in enumerate(measured)]
    rows.append(row("other", 1e-3, 0, val=-90.0, test_px=-80.0, test_elbo=-81.0))  # not a reproduction
    root = write_results(tmp_path / "results", rows)
    in_progress_curves(root, "vampprior-paper-vamp-seed0-1234abcd", [1, 2, 3], [-150.0, -120.0, -110.5])
    runs = pd.concat([pd.read_parquet(p) for p in (root / "runs").glob("*.parquet")], ignore_index=True)
    curves = pd.concat([pd.read_parquet(p) for p in (root / "curves").glob("*.parquet")], ignore_index=True)
    table = reproduction_table(runs, curves).set_index("reproduces")
    assert list(table.index) == ["vampprior-paper/standard", "vampprior-paper/vamp"]
    standard = table.loc["vampprior-paper/standard"]
    mean, sd = statistics.mean(measured), statistics.stdev(measured)
    half = 4.302653 * sd / math.sqrt(3)  # t(0.975, dof 2)
    assert standard["measured log p(x)"] == f"{mean:.2f} ± {sd:.2f}"
    assert standard["Δ (95% CI)"] == f"{mean + 88.56:+.2f} [{mean + 88.56 - half:+.2f}, {mean + 88.56 + half:+.2f}]"
    assert standard["seeds"] == "3" and "epochs 600, 601, 602" in standard["progress"]
    vamp = table.loc["vampprior-paper/vamp"]
    assert vamp["measured log p(x)"] == "–" and vamp["seeds"] == "0"
    assert "1 in progress: epoch 3 (valid ELBO -110.50)" in vamp["progress"]


def test_report_of_only_unfinished_reproductions_shows_their_progress(tmp_path):
    root = tmp_path / "results"
    in_progress_curves(root, "iwae-paper-iwae-k5-seed1-00ff00ff", [10, 20], [-100.0, -95.25])
    path = make_report(root, tmp_path / "report", console=quiet())
    text = path.read_text()
    assert "No run has finished yet" in text and "iwae-paper/iwae-k5" in text and "epoch 20 (valid ELBO -95.25)" in text
    assert "reproduction_progress.png" in text and (tmp_path / "report" / "reproduction_progress.png").stat().st_size


def test_progress_figure_stars_the_tested_checkpoint_of_completed_runs_only(tmp_path, monkeypatch):
    root = tmp_path / "results"
    in_progress_curves(root, "vampprior-paper-standard-seed0-aaaa0000", [1, 2, 3, 4], [-120.0, -99.0, -98.0, -98.5])
    in_progress_curves(root, "vampprior-paper-vamp-seed0-bbbb1111", [1, 2], [-110.0, -97.0])
    curves = pd.concat([pd.read_parquet(p) for p in (root / "curves").glob("*.parquet")], ignore_index=True)
    runs = pd.DataFrame({"run_id": ["vampprior-paper-standard-seed0-aaaa0000", "vampprior-paper-vamp-seed0-bbbb1111"],
                         "status": ["completed", "diverged"], "best_step": [3 * 500, 2 * 500]})
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out_dir, name: drawn.append(fig) or f"{name}.png")
    plot_reproduction_progress(curves, tmp_path, runs)
    stars = [(list(line.get_xdata()), list(line.get_ydata()), line.get_color())
             for line in drawn[0].axes[0].get_lines() if line.get_marker() == "*" and len(line.get_xdata())]
    curve_colors = {line.get_label(): line.get_color() for line in drawn[0].axes[0].get_lines()}
    assert stars == [([3.0], [-98.0], curve_colors["standard seed 0, tested at ★"])]
    assert "vamp seed 0" in curve_colors  # diverged: no star, no "tested" in its label


def test_reproduction_runs_stay_out_of_the_benchmark_comparison(tmp_path):
    """A folder with a benchmark grid and a reproduction: the versus and main tables hold only the benchmark's
    variants (labelled as in a one-grid folder); the reproduction meets its published value in its section."""
    rows = [row(v, 1e-3, s, val=-95.0 + d, test_px=-90.0 + d, test_elbo=-94.0 + d)
            for v, d in (("mean-field", 0.0), ("iaf", 0.5)) for s in (0, 1)]
    rows += [row("standard", 5e-4, s, val=-95.5, test_px=v, test_elbo=-94.7, grid="vampprior-paper")
             for s, v in enumerate([-88.42, -88.56])]
    path = make_report(write_results(tmp_path / "results", rows), tmp_path / "report", console=quiet())
    text = path.read_text()
    benchmark, reproductions = text.split("## Reproductions: measured here vs published")
    comparison = benchmark.split("## Versus the baseline: `mean-field`")[1]
    assert "| iaf |" in comparison and "| standard |" not in comparison and "vampprior-paper" not in comparison
    assert "2 reproduction run(s) are reported only in the reproduction section" in benchmark
    assert "without a run row" not in text  # the reproductions' curves are theirs, not orphans
    assert "| vampprior-paper/standard | -88.56 | -88.49 ± 0.10 |" in reproductions


def test_report_of_only_completed_reproductions_has_no_benchmark_sections(tmp_path):
    rows = [row("standard", 5e-4, s, val=-95.5, test_px=v, test_elbo=-94.7, grid="vampprior-paper")
            for s, v in enumerate([-88.42, -88.56])]
    path = make_report(write_results(tmp_path / "results", rows), tmp_path / "report", console=quiet())
    text = path.read_text()
    assert "## Versus the baseline" not in text and "## Main table" not in text and "## Failures" not in text
    assert "Only reproduction runs" in text and "| vampprior-paper/standard | -88.56 | -88.49 ± 0.10 |" in text


@pytest.mark.parametrize("path", REPRODUCE, ids=[p.stem for p in REPRODUCE])
def test_every_reproduce_config_has_a_published_entry_and_two_seeds(path):
    runs = load_grid(path)
    published = {(p.grid, p.variant): p for p in PUBLISHED}
    assert {(r.grid, r.variant) for r in runs} <= set(published)
    assert len({r.train.seed for r in runs}) >= 2
    for r in runs:  # the published test k on the published data, on the whole test set
        entry = published[(r.grid, r.variant)]
        assert (r.eval.iw_samples, r.data.dataset, r.data.max_eval_images) == (entry.iw_samples, entry.dataset, 0)
    assert "Reproduces:" in path.read_text() and "could not" in path.read_text()


def test_reproduce_configs_resolve_to_the_published_protocols():
    by_grid = {(r.grid, r.variant): r for path in REPRODUCE for r in load_grid(path) if r.train.seed == 0}
    by_variant = {v: r for (g, v), r in by_grid.items() if g in ("iwae-paper", "vampprior-paper")}
    for name, k in (("vae-k1", 1), ("iwae-k5", 5), ("iwae-k50", 50)):
        t = by_variant[name].train
        assert (t.objective, t.objective_samples) == ("elbo" if k == 1 else "iwae", k)
        assert (t.batch_size, t.max_steps, t.lr_schedule, t.optimizer_eps, t.select) == \
            (20, 3280 * 2500, "iwae", 1e-4, "last")
        m = by_variant[name].model
        assert (m.hidden, m.latent_dim, m.activation, m.scale, m.init) == ((200, 200), 50, "tanh", "exp", "glorot")
        assert (t.optimizer, t.lr) == ("adam", 1e-3)
    for name in ("standard", "vamp"):
        cfg = by_variant[name]
        t = cfg.train
        assert (t.batch_size, t.lr, t.max_steps, t.eval_every, t.kl_warmup_steps, t.patience, t.grad_normalize) == \
            (100, 5e-4, 2000 * 500, 500, 100 * 500, 51, "per-tensor")
        assert (cfg.model.activation, cfg.model.latent_dim, cfg.model.scale) == ("gated", 40, "hardtanh-logvar")
        assert (cfg.model.hidden, cfg.model.init, t.optimizer) == ((300, 300), "he", "adam")
    vamp = by_variant["vamp"].model
    assert (vamp.prior, vamp.prior_components, vamp.prior_pseudo_inputs) == ("vamp", 500, "hardtanh")
    for grid, likelihood, shape, steps_per_epoch in (("vampprior-caltech", "bernoulli", (28, 28), 41),
                                                     ("vampprior-frey", "discretized-logistic", (28, 20), 15)):
        for variant in ("standard", "vamp"):
            cfg, same = by_grid[grid, variant], by_variant[variant]
            assert cfg.model == replace(same.model, likelihood=likelihood, image_shape=shape,
                                        data_dim=shape[0] * shape[1])
            assert cfg.train == replace(same.train, max_steps=2000 * steps_per_epoch, eval_every=steps_per_epoch,
                                        kl_warmup_steps=100 * steps_per_epoch)
            assert cfg.eval == same.eval
    for variant in ("standard", "vamp"):  # the HVAE: the one-layer protocol with a second layer of 40
        cfg, same = by_grid["vampprior-hvae", variant], by_variant[variant]
        assert cfg.model == replace(same.model, layers=2, top_latent_dim=40)
        assert (cfg.train, cfg.eval, cfg.data) == (same.train, same.eval, same.data)


def test_an_unconfirmed_published_value_is_shown_as_such_and_never_subtracted():
    entry = next(p for p in PUBLISHED if p.grid == "vampprior-frey" and p.variant == "vamp")
    assert not entry.confirmed and "UNVERIFIED" in entry.source
    rows = [row("vamp", 5e-4, s, val=-1900.0, test_px=v, test_elbo=-1905.0, grid="vampprior-frey")
            for s, v in enumerate([-1880.0, -1882.0])]
    table = reproduction_table(pd.DataFrame(rows), pd.DataFrame()).set_index("reproduces")
    got = table.loc["vampprior-frey/vamp"]
    assert (got["published log p(x)"], got["Δ (95% CI)"], got["seeds"]) == ("not confirmed", "–", "2")
    assert got["measured log p(x)"] == "-1881.00 ± 1.41"


def test_runs_of_an_edited_reproduce_config_are_left_out_and_counted(tmp_path):
    """Two finished runs of the file as it is now (lr 5e-4) and one of an older version (lr 1e-3): only the
    current protocol's seeds enter the statistics; the other is counted."""
    rows = [row("vamp", 5e-4, s, val=-90.0, test_px=-86.0 - s, test_elbo=-91.0, grid="vampprior-paper",
                **{"train.lr": 5e-4, "model.prior": "vamp", "train.seed": s},
                started_at=pd.Timestamp("2026-02-01", tz="UTC") + pd.Timedelta(hours=s)) for s in (0, 1)]
    rows.append(row("vamp", 1e-3, 2, val=-90.0, test_px=-80.0, test_elbo=-91.0, grid="vampprior-paper",
                    **{"train.lr": 1e-3, "model.prior": "vamp", "train.seed": 2},
                    started_at=pd.Timestamp("2026-01-01", tz="UTC")))
    table = reproduction_table(pd.DataFrame(rows), pd.DataFrame()).set_index("reproduces")
    vamp = table.loc["vampprior-paper/vamp"]
    assert vamp["seeds"] == "2" and vamp["measured log p(x)"].startswith("-86.50")
    assert "1 run(s) of another config of this reproduction left out" in vamp["progress"]


SYLVESTER = sorted((REPO / "configs" / "reproduce").glob("sylvester-*.toml"))
SYLVESTER_FLOWS = {"no-flow": ("mean-field", None), "planar": ("planar", None), "iaf": ("iaf", None),
                   "o-snf": ("sylvester-orthogonal", 32), "h-snf": ("sylvester-householder", 8),
                   "t-snf": ("sylvester-triangular", None)}


@pytest.mark.parametrize("path", SYLVESTER, ids=[p.stem for p in SYLVESTER])
def test_sylvester_configs_resolve_to_the_official_codes_protocol(path):
    """Gated convs, z = 64, Adamax 5e-4 (eps 1e-7), batch 100, <= 2000 epochs, warm-up 100 epochs, patience 101
    epochs counted after it, best-on-validation; 16 flows with M = 32 / H = 8 pinned."""
    for r in load_grid(path):
        spe = r.steps_per_epoch
        m, t = r.model, r.train
        assert (m.architecture, m.latent_dim, m.scale, m.kl) == ("gated-conv", 64, "softplus-variance", "mc")
        assert (t.optimizer, t.lr, t.optimizer_eps, t.batch_size) == ("adamax", 5e-4, 1e-7, 100)
        assert (t.max_steps, t.eval_every, t.kl_warmup_steps) == (2000 * spe, spe, 100 * spe)
        assert (t.patience, t.patience_after_warmup, t.select) == (101, True, "best-valid")
        posterior, extra = SYLVESTER_FLOWS[r.variant]
        assert m.posterior == posterior and (posterior == "mean-field" or m.posterior_flow_steps == 16)
        if posterior == "sylvester-orthogonal":
            assert m.orthogonal_vectors == extra
        if posterior == "sylvester-householder":
            assert m.householder_reflections == extra
        if posterior == "iaf":
            assert m.flow_hidden == 320
