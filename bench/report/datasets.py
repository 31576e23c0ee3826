"""Results grouped by dataset: each dataset's runs are compared only with each other, in its own units."""

from __future__ import annotations

import pandas as pd

from bench.report.tables import normalize_runs
from vae_core.data.catalog import DATASETS

DATASET_COLUMN = "data.dataset"


def dataset_name(value: object) -> str:
    """The dataset of a row ('' for rows older than the column)."""
    return value if isinstance(value, str) else ""


def dataset_groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(dataset, its runs)] in registry order (unknown names after, by name), labels recomputed within each
    dataset (a variant is `grid/variant` only when the dataset's own runs span several grids). Rows without a
    dataset column form one group named ''."""
    names = runs[DATASET_COLUMN].map(dataset_name) if DATASET_COLUMN in runs.columns else pd.Series(
        "", index=runs.index)
    order = list(DATASETS)
    ranked = sorted(set(names), key=lambda n: (order.index(n) if n in order else len(order), n))
    return [(name, normalize_runs(runs[names == name].drop(columns="label", errors="ignore"))) for name in ranked]


def is_8bit(dataset: str) -> bool:
    """8-bit data (intensities v / 255): reported in bits per dimension beside nats."""
    spec = DATASETS.get(dataset)
    return spec is not None and spec.kind == "8bit"


def units_sentence(dataset: str) -> str:
    """What the numbers of a dataset's section are."""
    spec = DATASETS.get(dataset)
    shape = f"{spec.image_shape[0]}×{spec.image_shape[1]} " if spec else ""
    if is_8bit(dataset):
        return (f"Units: nats per {shape}image, and bits per dimension (bits/dim = −log p(x) / (pixels · ln 2), "
                "lower is better) for this 8-bit dataset.")
    return f"Units: nats per {shape}image."
