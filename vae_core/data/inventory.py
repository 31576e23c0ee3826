"""A non-raising survey of every dataset file, for `vaebench data`: where it is, its shape, mean and status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_core.data import binarized, mnist, sources
from vae_core.data.errors import ChecksumError, DataError, MissingDataError
from vae_core.data.paths import data_dirs


@dataclass(frozen=True)
class Entry:
    """One file of one dataset. `status`: ok | unverified | missing | mismatch | corrupt."""

    dataset: str
    item: str
    path: Path | None
    shape: tuple[int, ...] | None
    mean: float | None
    status: str
    detail: str = ""


def _failed(dataset: str, item: str, path: Path | None, err: DataError) -> Entry:
    if isinstance(err, MissingDataError):
        return Entry(dataset, item, None, None, None, "missing", str(err))
    status = "mismatch" if isinstance(err, ChecksumError) else "corrupt"
    return Entry(dataset, item, path, None, None, status, str(err))


def _binarized_entries(dirs: list[Path]) -> list[Entry]:
    entries = []
    for split in binarized.SPLITS:
        try:
            x, path = binarized.load_split(split, dirs)
        except DataError as err:
            entries.append(_failed(binarized.NAME, split, binarized.locate_split(split, dirs), err))
            continue
        entries.append(Entry(binarized.NAME, split, path, tuple(x.shape), float(x.mean(dtype=np.float64)), "ok"))
    try:
        labels = binarized.load_test_labels(dirs)
    except DataError as err:
        entries.append(_failed(binarized.NAME, "test labels", None, err))
    else:
        entries.append(Entry(binarized.NAME, "test labels", None, None, None, "missing",
                             "optional; not part of the canonical dataset") if labels is None else
                       Entry(binarized.NAME, "test labels", labels[1], tuple(labels[0].shape), None, "ok"))
    return entries


def _mnist_entries(dirs: list[Path]) -> list[Entry]:
    entries = []
    for key, spec in sources.IDX_FILES.items():
        try:
            f = mnist.load_idx(key, dirs)
        except DataError as err:
            entries.append(_failed("mnist-grayscale", spec.filename, mnist.locate_idx(key, dirs), err))
            continue
        mean = float(f.array.mean(dtype=np.float64)) / 255.0 if f.array.ndim == 3 else None
        status = "ok" if f.check != "unverified" else "unverified"
        entries.append(Entry("mnist-grayscale", spec.filename, f.path, tuple(f.array.shape), mean, status,
                             f"checked by {f.check}"))
    return entries


def inventory(data_dir: str | Path | None = None) -> list[Entry]:
    """Every known file, loaded and verified (binarized splits via the decoded cache); never raises DataError."""
    dirs = data_dirs(data_dir)
    return _binarized_entries(dirs) + _mnist_entries(dirs)


def fetch_missing(data_dir: str | Path | None = None) -> list[DataError]:
    """Download every missing file of both datasets into the cache; returns the failures instead of raising."""
    dirs = data_dirs(data_dir)
    failures: list[DataError] = []
    for split in binarized.SPLITS:
        try:
            binarized.load_split(split, dirs, download=True)
        except DataError as err:
            failures.append(err)
    for key in sources.IDX_FILES:
        try:
            mnist.load_idx(key, dirs, download=True)
        except DataError as err:
            failures.append(err)
    return failures
