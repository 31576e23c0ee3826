"""The gap section of the report: table per dataset and variant, paired Δ against the baseline from the versus
machinery (hand-checked), the sentence only where the interval excludes 0, the figures; absent without gaps."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.report import make_report
from bench.report.gaps import gap_sentence, gap_tables
from bench.report.stats import paired_difference
from bench.report.tables import normalize_runs
from tests.test_report import quiet, row, write_results

# per seed: (log p̂, L[q*], L[q]) of the baseline; iaf: the same log p̂ and L[q*] - L[q] 1 nat smaller
MF = [(-90.0, -93.0, -96.0), (-91.0, -94.2, -96.9), (-90.5, -93.4, -96.6)]
IAF_AMORT_DELTA = [-1.0, -1.1, -0.9]


def gap_row(variant: str, seed: int, px: float, opt: float, q: float, dataset: str = "binarized-mnist") -> dict:
    return row(variant, 1e-3, seed, val=-100.0 - seed, test_px=-99.0, test_elbo=-101.0, **{
        "data.dataset": dataset, "gap_iw_log_px": px, "elbo_local_opt": opt, "gap_elbo": q,
        "elbo_local_opt_ffg": opt - 0.5, "approximation_gap": px - opt, "amortization_gap": opt - q,
        "inference_gap": px - q, "active_units": 10 + seed, "mean_kl": 20.0, "gap_images": 100,
        "kl_per_dim": json.dumps([1.0, 0.5, 0.001]), "gap_seconds": 5.0})


def rows() -> list[dict]:
    out = []
    for s, (px, opt, q) in enumerate(MF):
        out.append(gap_row("mean-field", s, px, opt, q))
        out.append(gap_row("iaf", s, px, opt, q - IAF_AMORT_DELTA[s]))  # smaller amortization gap
        out.append(gap_row("mean-field", s + 10, px + 1, opt + 1, q + 1, dataset="mnist-dynamic"))
    return out


def test_gap_table_uses_the_paired_versus_difference_and_the_sentence_names_only_what_excludes_0():
    tables = gap_tables(normalize_runs(pd.DataFrame(rows())), "mean-field")
    assert set(tables) == {"binarized-mnist", "mnist-dynamic"}
    t = tables["binarized-mnist"].set_index("variant")
    expect = paired_difference(IAF_AMORT_DELTA, [0.0, 0.0, 0.0])
    assert t.loc["iaf", "amortization_mean"] == pytest.approx(expect.mean)
    assert (t.loc["iaf", "amortization_lo"], t.loc["iaf", "amortization_hi"]) == pytest.approx((expect.lo, expect.hi))
    assert t.loc["iaf", "approximation_mean"] == pytest.approx(0.0, abs=1e-12)
    assert t.loc["mean-field", "approximation_gap_mean"] == pytest.approx(sum(p - o for p, o, _ in MF) / 3)
    sentence = gap_sentence(tables["binarized-mnist"], "mean-field")
    assert "iaf shrinks the amortization gap" in sentence and "approximation" not in sentence
    assert "no family is said" in gap_sentence(tables["mnist-dynamic"], "mean-field")


def test_report_has_the_gap_section_and_figures_only_with_gaps(tmp_path):
    res = write_results(tmp_path / "r", rows())
    path = make_report(res, res / "report", console=quiet())
    text = path.read_text()
    assert "## Inference gaps" in text and "### mnist-dynamic" in text and "iaf shrinks the amortization gap" in text
    for dataset in ("binarized-mnist", "mnist-dynamic"):  # several datasets: each section's figures in its folder
        for name in ("inference_gaps.png", "kl_per_dim.png"):
            assert (res / "report" / dataset / name).exists() and f"]({dataset}/{name})" in text
    plain = write_results(tmp_path / "p", [row("a", 1e-3, s, val=-100.0, test_px=-99.0, test_elbo=-101.0)
                                           for s in range(2)])
    assert "Inference gaps" not in make_report(plain, plain / "report", console=quiet()).read_text()
