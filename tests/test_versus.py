"""The versus-the-baseline table: t quantiles against published values, differences and intervals against hand
computations (paired, unpaired, one seed, a diverged seed), choice of lr on validation, the sentence, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UserError
from bench.report import make_report
from bench.report.stats import paired_difference, t_cdf, t_quantile, welch_difference
from bench.report.tables import normalize_runs
from bench.report.versus import display_versus, pick_baseline, versus_by_lr, versus_sentence, versus_table
from tests.test_report import quiet, row, write_results

# Two-sided 95% critical values t_{0.975, dof} (standard tables; dof 1 and 2 also in closed form:
# tan(0.475 pi) = 12.7062047, 0.95 / sqrt(2 * 0.975 * 0.025) = 4.3026527).
T975 = {1: 12.706204736174707, 2: 4.302652729749464, 3: 3.182446305284263, 4: 2.7764451051977987,
        5: 2.570581835636314, 10: 2.2281388519649385, 30: 2.0422724563012373, math.inf: 1.959963984540054}


@pytest.mark.parametrize("dof", sorted(T975))
def test_t_quantile_matches_tables(dof):
    assert t_quantile(0.975, dof) == pytest.approx(T975[dof], abs=1e-9)
    assert t_quantile(0.025, dof) == pytest.approx(-T975[dof], abs=1e-9)


def test_t_quantile_other_levels_and_closed_forms():
    assert t_quantile(0.995, 3) == pytest.approx(5.840909309733349, abs=1e-9)
    assert t_quantile(0.95, 10) == pytest.approx(1.8124611228107335, abs=1e-9)
    for p in (0.6, 0.9, 0.99):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)


@pytest.mark.parametrize("dof", [1.7, 2.5, 4.959184])
def test_t_cdf_at_non_integer_dof_matches_integrated_density(dof):
    """Welch dof are not integers: check the distribution function by Simpson's rule on the density."""
    density = lambda t: math.exp(math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)
                                 - (dof + 1) / 2 * math.log1p(t * t / dof)) / math.sqrt(dof * math.pi)
    q = t_quantile(0.975, dof)
    n, h = 20000, q / 20000
    area = h / 3 * sum((1 if i in (0, n) else 4 if i % 2 else 2) * density(i * h) for i in range(n + 1))
    assert 0.5 + area == pytest.approx(0.975, abs=1e-10)
    assert t_cdf(q, dof) == pytest.approx(0.975, abs=1e-12)


def test_paired_difference_by_hand():
    # d = [1, 2, 0.5]: mean 3.5/3; deviations -1/6, 5/6, -2/3 -> sum of squares 7/6, var 7/12, se sqrt(7/36)
    d = paired_difference([-99.0, -100.0, -100.5], [-100.0, -102.0, -101.0])
    assert d.mean == pytest.approx(3.5 / 3) and d.se == pytest.approx(math.sqrt(7 / 36)) and d.dof == 2
    assert (d.lo, d.hi) == pytest.approx((3.5 / 3 - 4.302652729749464 * math.sqrt(7 / 36),
                                          3.5 / 3 + 4.302652729749464 * math.sqrt(7 / 36)))
    assert d.n == 3 and not d.excludes_zero
    one = paired_difference([-99.0], [-100.0])
    assert one.mean == 1.0 and math.isnan(one.se) and not one.has_interval


def test_welch_difference_by_hand():
    # x: mean -98.5, var 5/3, n 4; y: mean -101, var 1, n 3 -> se^2 = 5/12 + 1/3 = 3/4
    # dof = (3/4)^2 / ((5/12)^2 / 3 + (1/3)^2 / 2) = 0.5625 / (25/432 + 1/18) = 243/49 = 4.959184
    d = welch_difference([-98.0, -99.0, -97.0, -100.0], [-100.0, -102.0, -101.0])
    assert d.mean == pytest.approx(2.5) and d.se == pytest.approx(math.sqrt(0.75))
    assert d.dof == pytest.approx(243 / 49)
    half = t_quantile(0.975, 243 / 49) * math.sqrt(0.75)
    assert 2.57 < t_quantile(0.975, 243 / 49) < 2.58  # between t(5) = 2.5706 and t(4.9), far from z = 1.96
    assert (d.lo, d.hi) == pytest.approx((2.5 - half, 2.5 + half)) and d.excludes_zero
    assert not welch_difference([-98.0], [-100.0, -101.0]).has_interval


# ---- the table on a synthetic results folder ------------------------------------------------------------------
MF = {0: (-100.0, -105.0), 1: (-102.0, -106.0), 2: (-101.0, -104.0)}  # seed: (test log p(x), test ELBO)
IAF = {0: (-99.0, -104.0), 1: (-100.0, -104.5), 2: (-100.5, -103.0)}  # d log p(x) = 1, 2, 0.5; d ELBO = 1, 1.5, 1
VAMP = {10: (-98.0, -103.0), 11: (-99.0, -104.0), 12: (-97.0, -102.0), 13: (-100.0, -105.0)}  # other seeds


def _rows(name, table, lr=1e-3, train_seconds=10.0, wall=20.0, val=-101.0, steps=100, **kw):
    return [row(name, lr, s, val=val, test_px=px, test_elbo=el, wall=wall, train_seconds=train_seconds,
                steps_done=steps, **kw) for s, (px, el) in table.items()]


def grid() -> pd.DataFrame:
    rows = _rows("mean-field", MF, train_seconds=10.0, wall=20.0)
    rows += _rows("iaf", IAF, train_seconds=30.0, wall=50.0)
    rows += _rows("vamp", VAMP, train_seconds=15.0, wall=30.0, steps=50)
    return normalize_runs(pd.DataFrame(rows))


def test_a_stacked_run_is_charged_its_share_of_the_stack():
    """A run in a stack of 3 trained in the stack's seconds alongside 2 others: its cost is a third of them."""
    rows = _rows("mean-field", MF, train_seconds=10.0, wall=20.0)
    rows += _rows("iaf", IAF, train_seconds=30.0, wall=60.0, stack_size=3)
    iaf = versus_table(normalize_runs(pd.DataFrame(rows)), "mean-field").set_index("variant").loc["iaf"]
    assert iaf["step_ratio"] == pytest.approx((30 / 3 / 100) / (10 / 100)) and iaf["wall_ratio"] == pytest.approx(1.0)


def test_paired_and_unpaired_rows_by_hand():
    table = versus_table(grid(), "mean-field").set_index("variant")
    assert list(table.index) == ["mean-field", "iaf", "vamp"]
    iaf = table.loc["iaf"]
    assert iaf["pairing"] == "paired" and iaf["n"] == 3 and iaf["excluded"] == ""
    assert iaf["log_px_mean"] == pytest.approx(3.5 / 3) and iaf["log_px_dof"] == 2
    assert iaf["log_px_lo"] == pytest.approx(3.5 / 3 - 4.302652729749464 * math.sqrt(7 / 36))
    # d ELBO = 1, 1.5, 1: mean 7/6, var ((1/6)^2 * 2 + (1/3)^2) / 2 = 1/12, se = sqrt(1/36) = 1/6
    assert iaf["elbo_mean"] == pytest.approx(7 / 6) and iaf["elbo_se"] == pytest.approx(1 / 6)
    assert iaf["elbo_lo"] == pytest.approx(7 / 6 - 4.302652729749464 / 6)
    assert iaf["step_ratio"] == pytest.approx((30 / 100) / (10 / 100)) and iaf["wall_ratio"] == pytest.approx(2.5)

    vamp = table.loc["vamp"]  # seeds 10-13 against 0-2: nothing to pair, Welch on all seeds
    assert vamp["pairing"] == "welch" and (vamp["n_variant"], vamp["n_baseline"]) == (4, 3)
    assert vamp["log_px_mean"] == pytest.approx(2.5) and vamp["log_px_dof"] == pytest.approx(243 / 49)
    assert vamp["log_px_se"] == pytest.approx(math.sqrt(0.75))
    assert vamp["step_ratio"] == pytest.approx((15 / 50) / (10 / 100)) and vamp["wall_ratio"] == pytest.approx(1.5)

    base = table.loc["mean-field"]
    assert base["pairing"] == "baseline" and base["step_ratio"] == 1.0 and base["log_px_mean"] == 0.0

    shown = display_versus(table.reset_index(), show_lr=False).set_index("variant")
    assert shown.loc["iaf", "comparison"] == "paired, 3 seeds, t dof 2"
    assert shown.loc["vamp", "comparison"] == "unpaired (Welch), 4 vs 3 seeds, t dof 5.0"
    assert shown.loc["iaf", "Δ log p(x) ± se"] == "+1.17 ± 0.44"
    assert shown.loc["iaf", "log p(x) 95% CI"] == "[−0.73, +3.06]"
    assert shown.loc["iaf", "train s/step"] == "3.00×" and shown.loc["mean-field", "train s/step"] == "1.00×"


def test_sentence_never_calls_an_interval_with_zero_better():
    table = versus_table(grid(), "mean-field")
    text = versus_sentence(table, "mean-field")
    # iaf log p(x): [-0.73, +3.06] includes 0; iaf ELBO: 7/6 -/+ 4.30/6 = [+0.45, +1.88]; vamp: Welch excludes 0
    assert "iaf has a higher test ELBO than mean-field (+1.17 nats, 95% CI [+0.45, +1.88])" in text
    assert "vamp has a higher test IW log p(x) than mean-field" in text
    assert "iaf has a higher test IW log p(x)" not in text
    assert "iaf (test IW log p(x): +1.17 nats, 95% CI [−0.73, +3.06])" in text
    assert "neither is better" in text


def test_a_diverged_seed_leaves_its_pair_out_and_says_so():
    runs = grid()
    runs.loc[(runs["variant"] == "iaf") & (runs["seed"] == 2), "status"] = "diverged"
    iaf = versus_table(runs, "mean-field").set_index("variant").loc["iaf"]
    # pairs of seeds 0 and 1 only: d log p(x) = 1, 2 -> mean 1.5, sd sqrt(0.5), se 0.5, dof 1
    assert iaf["pairing"] == "paired" and iaf["n"] == 2 and iaf["excluded"] == "seed 2 (iaf diverged)"
    assert iaf["log_px_mean"] == pytest.approx(1.5) and iaf["log_px_se"] == pytest.approx(0.5)
    assert iaf["log_px_dof"] == 1 and iaf["log_px_hi"] == pytest.approx(1.5 + 12.706204736174707 * 0.5)
    base = versus_table(runs.assign(status="completed").pipe(
        lambda r: r.where(~((r["variant"] == "mean-field") & (r["seed"] == 1)), r.assign(status="failed"))),
        "mean-field").set_index("variant")
    assert base.loc["iaf", "excluded"] == "seed 1 (mean-field failed)"
    assert base.loc["mean-field", "excluded"] == "seed 1 (mean-field failed)"


def test_one_seed_gives_no_interval():
    runs = normalize_runs(pd.DataFrame(_rows("mean-field", {0: MF[0]}) + _rows("iaf", {0: IAF[0]})))
    iaf = versus_table(runs, "mean-field").set_index("variant").loc["iaf"]
    assert iaf["pairing"] == "paired" and iaf["n"] == 1 and iaf["log_px_mean"] == pytest.approx(1.0)
    assert math.isnan(iaf["log_px_lo"]) and math.isnan(iaf["log_px_se"])
    shown = display_versus(versus_table(runs, "mean-field"), False).set_index("variant").loc["iaf"]
    assert shown["log p(x) 95% CI"] == "– (n = 1)" and shown["Δ log p(x) ± se"] == "+1.00"
    text = versus_sentence(versus_table(runs, "mean-field"), "mean-field")
    assert "no difference is distinguishable" in text and "No interval" in text and "better" not in text


def test_each_variant_at_its_best_lr_on_validation_and_per_lr():
    rows = _rows("mean-field", MF, lr=1e-3, val=-101.0) + _rows("mean-field", MF, lr=3e-3, val=-120.0)
    # iaf: test figures favour lr 3e-3 (+10 nats) but validation favours 1e-3: 1e-3 must be used
    rows += _rows("iaf", IAF, lr=1e-3, val=-100.0)
    rows += _rows("iaf", {s: (px + 10, el + 10) for s, (px, el) in IAF.items()}, lr=3e-3, val=-130.0)
    runs = normalize_runs(pd.DataFrame(rows))
    iaf = versus_table(runs, "mean-field").set_index("variant").loc["iaf"]
    assert iaf["lr"] == 1e-3 and iaf["baseline_lr"] == 1e-3 and iaf["log_px_mean"] == pytest.approx(3.5 / 3)
    by_lr = versus_by_lr(runs, "mean-field").set_index("lr")
    assert list(by_lr["variant"]) == ["iaf", "iaf"]
    assert by_lr.loc[3e-3, "log_px_mean"] == pytest.approx(3.5 / 3 + 10)


def test_baseline_choice():
    runs = grid()
    assert pick_baseline(runs) == "mean-field" and pick_baseline(runs, "vamp") == "vamp"
    assert pick_baseline(runs[runs["variant"] != "mean-field"]) == "iaf"  # the first in grid order
    with pytest.raises(UserError, match="'nope' is not a variant of these results; variants: iaf, vamp, mean-field"):
        pick_baseline(runs, "nope")


def test_report_writes_the_section_and_figures(tmp_path: Path):
    runs = grid()
    root = write_results(tmp_path / "res", [r for _, r in runs.drop(columns="label").iterrows()], curves=False)
    make_report(root, tmp_path / "out", console=quiet())
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Versus the baseline: `mean-field`" in text and "| iaf | paired, 3 seeds, t dof 2 |" in text
    assert text.index("## Versus the baseline") < text.index("## Main table")
    assert (tmp_path / "out" / "versus.png").stat().st_size > 0 and (tmp_path / "out" / "versus.pdf").is_file()
    assert not (tmp_path / "out" / "versus_by_lr.png").exists()  # one lr only


def test_cli_baseline_option(tmp_path: Path):
    runs = grid()
    root = write_results(tmp_path / "res", [r for _, r in runs.drop(columns="label").iterrows()], curves=False)
    res = CliRunner().invoke(app, ["report", "--results", str(root), "--baseline", "iaf"])
    assert res.exit_code == 0, res.output
    assert "## Versus the baseline: `iaf`" in (root / "report" / "report.md").read_text()
    bad = CliRunner().invoke(app, ["report", "--results", str(root), "--out", str(tmp_path / "o"),
                                   "--baseline", "nope"])
    assert bad.exit_code == 2 and "'nope' is not a variant" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
