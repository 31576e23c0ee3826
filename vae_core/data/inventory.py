"""A non-raising survey of every dataset, for `vaebench data`: its files (where, shape, mean, checksum status)
and, per registry entry, its split sizes and pixel mean once loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_core.data import binarized, mnist
from vae_core.data.catalog import DATASETS, DEFAULT_SPLIT_SEED, DatasetSpec
from vae_core.data.errors import ChecksumError, DataError, MissingDataError
from vae_core.data.paths import data_dirs

IDX_DATASETS = {"mnist-dynamic": mnist.MNIST, "fashion-mnist": mnist.FASHION}
"""Registry entries whose files are surveyed (and downloaded) one IDX file at a time."""


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


@dataclass(frozen=True)
class Summary:
    """One registry dataset as loaded here: split sizes, training pixel mean, folder(s); `status` as Entry's."""

    spec: DatasetSpec
    splits: tuple[int, int, int] | None
    mean: float | None
    source: str
    status: str
    detail: str = ""


def _status(err: DataError) -> str:
    if isinstance(err, MissingDataError):
        return "missing"
    return "mismatch" if isinstance(err, ChecksumError) else "corrupt"


def _failed(dataset: str, item: str, path: Path | None, err: DataError) -> Entry:
    status = _status(err)
    return Entry(dataset, item, None if status == "missing" else path, None, None, status, str(err))


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


def _idx_entries(family: mnist.IdxFamily, dirs: list[Path]) -> list[Entry]:
    entries = []
    for key, spec in family.files().items():
        try:
            f = mnist.load_idx(key, dirs, family=family)
        except DataError as err:
            entries.append(_failed(family.label, spec.filename, mnist.locate_idx(key, dirs, family), err))
            continue
        mean = float(f.array.mean(dtype=np.float64)) / 255.0 if f.array.ndim == 3 else None
        status = "ok" if f.check != "unverified" else "unverified"
        entries.append(Entry(family.label, spec.filename, f.path, tuple(f.array.shape), mean, status,
                             f"checked by {f.check}"))
    return entries


def inventory(data_dir: str | Path | None = None) -> list[Entry]:
    """Every file of binarized MNIST and of the IDX datasets, loaded and verified; never raises DataError."""
    dirs = data_dirs(data_dir)
    return _binarized_entries(dirs) + [e for family in IDX_DATASETS.values() for e in _idx_entries(family, dirs)]


def summarize(spec: DatasetSpec, dirs: list[Path], split_seed: int = DEFAULT_SPLIT_SEED) -> Summary:
    """`spec` loaded from `dirs` (no download): its sizes and training pixel mean, or why it did not load."""
    try:
        ds = spec.load(dirs, False, split_seed)
    except DataError as err:
        return Summary(spec, None, None, "", _status(err), str(err))
    sizes = (ds.train.shape[0], ds.valid.shape[0], ds.test.shape[0])
    return Summary(spec, sizes, float(ds.train.double().mean()), ds.source, "ok")


def summaries(data_dir: str | Path | None = None) -> list[Summary]:
    """Every registry dataset, in registry order; never raises DataError."""
    dirs = data_dirs(data_dir)
    return [summarize(spec, dirs) for spec in DATASETS.values()]


def fetch_missing(data_dir: str | Path | None = None) -> list[DataError]:
    """Download every missing file of every dataset into the cache; returns the failures instead of raising."""
    dirs = data_dirs(data_dir)
    failures: list[DataError] = []
    for split in binarized.SPLITS:
        try:
            binarized.load_split(split, dirs, download=True)
        except DataError as err:
            failures.append(err)
    for family in IDX_DATASETS.values():
        for key in family.files():
            try:
                mnist.load_idx(key, dirs, download=True, family=family)
            except DataError as err:
                failures.append(err)
    for spec in DATASETS.values():
        if spec.name in IDX_DATASETS or spec.name == binarized.NAME:
            continue
        try:
            spec.load(dirs, True, DEFAULT_SPLIT_SEED)
        except DataError as err:
            failures.append(err)
    return failures
