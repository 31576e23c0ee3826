"""Reports of a results folder holding several datasets: each dataset its own section, variants compared only
within a dataset, bits/dim for 8-bit data, images in the model's own shape."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.report import make_report
from bench.report import images as images_module
from bench.report.images import tile
from bench.storage import ResultsLayout
from tests.test_report import grid_rows, quiet, row, write_results
from vae_core.models import build_vae

# frey-faces: variants "a" and "c", three seeds each (test IW log p(x) per seed). "c" exists only here: pooled with
# the MNIST runs of "a" its Δ would be about +1700 nats instead of the within-dataset +8.33.
FREY = {"a": (-1800.0, -1802.0, -1801.0), "c": (-1790.0, -1795.0, -1793.0)}
FREY_DIM = 560


def frey_rows() -> list[dict]:
    rows = []
    for variant, values in FREY.items():
        for seed, px in enumerate(values):
            rows.append(row(variant, 1e-3, seed, val=px - 5, test_px=px, test_elbo=px - 10, grid="frey",
                            **{"data.dataset": "frey-faces", "model.data_dim": FREY_DIM,
                               "test_iw_bits_per_dim": -px / (FREY_DIM * math.log(2)),
                               "test_elbo_bits_per_dim": -(px - 10) / (FREY_DIM * math.log(2))}))
    return rows


def section(md: str, dataset: str) -> str:
    start = md.index(f"# Dataset `{dataset}`")
    rest = md[start + 1:]
    ends = [i for i in (rest.find("\n# Dataset"), rest.find("\n## Published")) if i >= 0]
    return md[start: start + 1 + min(ends)]


@pytest.fixture
def two_datasets(tmp_path: Path) -> Path:
    return write_results(tmp_path / "results", grid_rows() + frey_rows())


def test_each_dataset_has_its_own_section_and_never_meets_the_other(two_datasets, tmp_path):
    md = make_report(two_datasets, tmp_path / "out", console=quiet()).read_text()
    mnist, frey = section(md, "binarized-mnist"), section(md, "frey-faces")
    assert md.index("# Dataset `binarized-mnist`") < md.index("# Dataset `frey-faces`")
    delta = np.mean([c - a for a, c in zip(FREY["a"], FREY["c"])])  # paired by seed: +8.33
    assert f"| c | paired, 3 seeds, t dof 2 | {delta:+.2f} ± " in frey
    assert "| c |" not in mnist and "| b |" not in frey  # no variant of one dataset in the other's tables
    assert "+1.50 ± 0.50" in mnist  # b vs a on MNIST alone, as in tests/test_versus.py's folder
    bits = [-px / (FREY_DIM * math.log(2)) for px in FREY["c"]]
    assert "test bits/dim" in frey and f"{np.mean(bits):.3f} ± {np.std(bits, ddof=1):.3f}" in frey
    assert "bits/dim" not in mnist and "8-bit" in frey and "28×20" in frey
    for dataset in ("binarized-mnist", "frey-faces"):
        assert (tmp_path / "out" / dataset / "log_px_by_variant.png").is_file()
        assert f"]({dataset}/log_px_by_variant.png)" in md


def test_one_dataset_keeps_todays_layout(tmp_path):
    results = write_results(tmp_path / "results", frey_rows())
    md = make_report(results, tmp_path / "out", console=quiet()).read_text()
    assert "# Dataset" not in md and "](log_px_by_variant.png)" in md
    assert "test bits/dim" in md and "8-bit" in md


def test_a_baseline_absent_from_one_dataset_is_used_where_present(two_datasets, tmp_path):
    md = make_report(two_datasets, tmp_path / "out", console=quiet(), baseline="c").read_text()
    assert "## Versus the baseline: `c`" in section(md, "frey-faces")
    assert "## Versus the baseline: `a`" in section(md, "binarized-mnist")  # the default there


def test_images_of_a_frey_model_are_28_by_20(tmp_path):
    images = np.arange(4 * FREY_DIM, dtype=np.float32).reshape(4, FREY_DIM)  # [4, 28 * 20], row-major
    canvas = tile(images, 2, 2, (28, 20))
    assert canvas.shape == (2 * 29 - 1, 2 * 21 - 1)
    np.testing.assert_array_equal(canvas[29:, :20], images[2].reshape(28, 20))
    rows = frey_rows()
    results = write_results(tmp_path / "results", rows)
    model = build_vae({"data_dim": FREY_DIM, "image_shape": [28, 20], "likelihood": "discretized-logistic",
                       "latent_dim": 2, "hidden": [8]})
    best_c = max((r for r in rows if r["variant"] == "c"), key=lambda r: r["val_elbo"])
    ResultsLayout(results).checkpoint(best_c["run_id"]).parent.mkdir(parents=True, exist_ok=True)
    model.save(ResultsLayout(results).checkpoint(best_c["run_id"]))
    md = make_report(results, tmp_path / "out", console=quiet()).read_text()
    assert "![Samples from the prior, `c`](samples_c.png)" in md and (tmp_path / "out" / "samples_c.png").is_file()
    assert "could not be loaded" in md or "Test images (top)" in md  # frey-faces data: present after the merge
    manifold = images_module._manifold(model, (28, 20), "c", tmp_path / "out", "c", torch.float32)
    assert (tmp_path / "out" / manifold).is_file()  # decoded through the likelihood's means
