"""Image figures from checkpoints: prior samples, reconstructions and, for 2-d latents, the latent manifold and
a scatter of test codes. Each variant uses the checkpoint of its best seed on VALIDATION (at its best lr).

What cannot be drawn (no checkpoint, no data, no labels) becomes a note for report.md, never an exception.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch

from bench.report.figures import new_figure, save
from bench.report.tables import best_runs
from bench.storage import ResultsLayout

SAMPLE_SEED = 0  # generator seed for prior samples
PICK_SEED = 0  # seed of the random test images shown as reconstructions (the test file is sorted by digit)
SCATTER_SEED = 1
N_RECONSTRUCTIONS = 16
N_SCATTER = 2000
MANIFOLD_STEPS = 15


@dataclass
class ImageResult:
    figures: list[tuple[str, str, str]] = field(default_factory=list)  # (caption, PNG file name, which run)
    notes: list[str] = field(default_factory=list)


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "variant"


def pick_indices(n_total: int, k: int, seed: int) -> torch.Tensor:
    """k distinct row indices drawn uniformly at random with a fixed seed."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:min(k, n_total)]


def tile(images: np.ndarray, rows: int, cols: int, shape: tuple[int, int], pad: int = 1,
         pad_value: float = 1.0) -> np.ndarray:
    """[rows*cols, h*w] (row-major images of `shape` (h, w)) -> one [rows*(h+pad)-pad, cols*(w+pad)-pad] image."""
    h, w = shape
    canvas = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), pad_value, dtype=np.float32)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = img.reshape(h, w)
    return canvas


def _show(ax, canvas: np.ndarray, title: str, **kwargs) -> None:
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=9)
    if "extent" not in kwargs:
        ax.set_axis_off()


class _Data:
    """Test sets loaded on first use, once per dataset name; a load error is remembered as a note."""

    def __init__(self, data_dir: Path | None, download: bool = False):
        self.data_dir, self.download = data_dir, download
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor | None] | str] = {}

    def get(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None] | str:
        if name not in self.cache:
            from vae_core.data import DataError, binarize, load_dataset

            try:
                ds = load_dataset(name, self.data_dir, download=self.download)
                test = ds.test
                if ds.dynamic:  # grayscale: one fixed binarization, as in evaluation
                    test = binarize(test, torch.Generator().manual_seed(0))
                self.cache[name] = (test, ds.test_labels)
            except DataError as err:
                self.cache[name] = f"dataset {name!r} could not be loaded ({str(err).splitlines()[0]})"
        return self.cache[name]


def image_figures(runs: pd.DataFrame, results_dir: Path, out_dir: Path, data_dir: Path | None,
                  download: bool = False) -> ImageResult:
    from vae_core import CheckpointError, load_vae

    result = ImageResult()
    picks = best_runs(runs)
    if picks.empty:
        result.notes.append("No completed run: no sample or reconstruction images.")
        return result
    layout = ResultsLayout(results_dir)
    data = _Data(data_dir, download)
    data_note_given = set()
    for _, pick in picks.iterrows():
        variant, run_id = pick["variant"], pick["run_id"]
        who = f"`{variant}`"
        source = (f"Checkpoint of run `{run_id}` (seed {int(pick['seed'])}, lr {pick['lr']:g}): the best seed of "
                  f"`{variant}` on validation ELBO at its best lr.")
        path = layout.checkpoint(run_id)
        if not path.is_file():
            result.notes.append(f"Images for {who} skipped: checkpoint {path} is missing.")
            continue
        try:
            model = load_vae(path, map_location="cpu").eval()
        except CheckpointError as err:
            result.notes.append(f"Images for {who} skipped: {err}.")
            continue
        cfg = model.config
        shape = tuple(cfg.image_shape)  # (height, width)
        if min(shape) == 1:
            result.notes.append(f"Images for {who} skipped: data_dim {cfg.data_dim} is a flat vector, not an image "
                                f"(model.image_shape {list(shape)}).")
            continue
        dtype = next(model.parameters()).dtype
        name = safe_name(variant)

        result.figures.append((f"Samples from the prior, {who}", _samples(model, shape, variant, out_dir, name),
                               source))

        row = runs[runs["run_id"] == run_id].iloc[0]
        dataset = row.get("data.dataset", "") or "binarized-mnist"
        loaded = data.get(dataset)
        if isinstance(loaded, str):
            if dataset not in data_note_given:
                result.notes.append(f"Reconstructions and latent plots skipped: {loaded}.")
                data_note_given.add(dataset)
            continue
        test, labels = loaded
        result.figures.append((f"Test images (top) and their reconstructions (bottom), {who}",
                               _reconstructions(model, test.to(dtype), shape, variant, out_dir, name), source))
        if cfg.latent_dim == 2 and cfg.layers == 1:  # a 2-D z to lay out (two layers: z is [z1, z2])
            result.figures.append((f"Latent manifold (decoder means over a {MANIFOLD_STEPS}×{MANIFOLD_STEPS} grid "
                                   f"of z), {who}", _manifold(model, shape, variant, out_dir, name, dtype), source))
            if labels is None:
                result.notes.append(f"Latent scatter for {who} skipped: dataset {dataset!r} has no test labels.")
            else:
                result.figures.append((f"Latent codes of {min(N_SCATTER, len(test))} random test images by digit, "
                                       f"{who}", _scatter(model, test.to(dtype), labels, variant, out_dir, name),
                                       source))
    return result


def _samples(model, shape: tuple[int, int], variant: str, out_dir: Path, name: str) -> str:
    x = model.sample(64, torch.Generator().manual_seed(SAMPLE_SEED)).float().numpy()
    fig = new_figure(4.6, 4.9)
    _show(fig.add_subplot(), tile(x, 8, 8, shape), f"{variant}: 64 samples from the prior ({_means(model)})")
    return save(fig, out_dir, f"samples_{name}", pdf=False)


def _reconstructions(model, test: torch.Tensor, shape: tuple[int, int], variant: str, out_dir: Path, name: str) -> str:
    idx = pick_indices(test.shape[0], N_RECONSTRUCTIONS, PICK_SEED)
    x = test[idx]
    recon = model.reconstruct(x).float().numpy()
    rows = math.ceil(len(idx) / 8)
    fig = new_figure(5.2, 2 * (rows * 5.2 / 8 + 0.3))
    top, bottom = fig.subplots(2, 1)
    _show(top, tile(x.float().numpy(), rows, 8, shape), f"{variant}: {len(idx)} random test images")
    _show(bottom, tile(recon, rows, 8, shape), f"reconstructions ({_means(model)} from the posterior's centre)")
    return save(fig, out_dir, f"reconstructions_{name}", pdf=False)


def _means(model) -> str:
    """What the images show: the likelihood's per-pixel means."""
    return "Bernoulli means" if model.config.likelihood == "bernoulli" else f"{model.config.likelihood} means"


def _manifold_axis(model) -> tuple[np.ndarray, np.ndarray, str]:
    """Grid values per latent dimension: [-3, 3] for the standard prior, else the prior's 1%-99% quantiles."""
    if model.config.prior == "standard":
        v = np.linspace(-3.0, 3.0, MANIFOLD_STEPS)
        return v, v, "z in [−3, 3]²"
    with torch.no_grad():
        z = model.prior.sample(20000, torch.Generator().manual_seed(SAMPLE_SEED)).float().numpy()
    lo, hi = np.quantile(z, [0.01, 0.99], axis=0)
    return (np.linspace(lo[0], hi[0], MANIFOLD_STEPS), np.linspace(lo[1], hi[1], MANIFOLD_STEPS),
            "z between the prior's 1% and 99% quantiles")


def _manifold(model, shape: tuple[int, int], variant: str, out_dir: Path, name: str, dtype: torch.dtype) -> str:
    z1, z2, how = _manifold_axis(model)
    # Row r shows z2 = z2[::-1][r] (high z2 at the top), column c shows z1[c].
    grid = np.array([[a, b] for b in z2[::-1] for a in z1], dtype=np.float64)
    with torch.no_grad():
        x = model.decode_mean(torch.as_tensor(grid, dtype=dtype)).float().numpy()
    canvas = tile(x, MANIFOLD_STEPS, MANIFOLD_STEPS, shape, pad=0)
    dz1, dz2 = (z1[1] - z1[0]) / 2, (z2[1] - z2[0]) / 2
    fig = new_figure(5.6, 5.8)
    ax = fig.add_subplot()
    _show(ax, canvas, f"{variant}: decoder means over a {MANIFOLD_STEPS}×{MANIFOLD_STEPS} grid\n{how}",
          extent=(z1[0] - dz1, z1[-1] + dz1, z2[0] - dz2, z2[-1] + dz2))
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.grid(False)
    return save(fig, out_dir, f"latent_manifold_{name}", pdf=False)


def _scatter(model, test: torch.Tensor, labels: torch.Tensor, variant: str, out_dir: Path, name: str) -> str:
    idx = pick_indices(test.shape[0], N_SCATTER, SCATTER_SEED)
    z = model.latent_code(test[idx]).float().numpy()
    digits = labels[idx].numpy()
    frame = pd.DataFrame({"z1": z[:, 0], "z2": z[:, 1], "digit": digits.astype(str)})
    order = sorted(frame["digit"].unique(), key=int)
    with sns.axes_style("whitegrid"):
        fig = new_figure(6.2, 5.2)
        ax = fig.add_subplot()
        sns.scatterplot(data=frame, x="z1", y="z2", hue="digit", hue_order=order, palette="tab10", s=8,
                        linewidth=0, alpha=0.8, ax=ax)
        ax.legend(title="digit", fontsize=8, title_fontsize=8, markerscale=1.5, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_xlabel("z₁ (posterior centre)")
        ax.set_ylabel("z₂")
        ax.set_title(f"{variant}: latent codes of {len(idx)} random test images", fontsize=9)
    return save(fig, out_dir, f"latent_scatter_{name}", pdf=False)
