"""Datasets for vaebench: statically binarized MNIST and grayscale MNIST for dynamic binarization.

Files are searched in `data_dirs()` order (explicit folder, $VAEBENCH_DATA, the cache), parsed strictly,
verified against published digests, cached in a fast decoded form, and downloaded into the cache on request.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vae_core.data import binarized, mnist
from vae_core.data.dataset import Dataset, binarize
from vae_core.data.errors import ChecksumError, CorruptDataError, DataError, DownloadError, MissingDataError
from vae_core.data.paths import cache_dir, check_data_dir, data_dirs, offline_from_env

DATASETS = ("binarized-mnist", "mnist-dynamic")

__all__ = [
    "DATASETS", "ChecksumError", "CorruptDataError", "DataError", "Dataset", "DownloadError", "MissingDataError",
    "binarize", "cache_dir", "check_data_dir", "data_dirs", "load_dataset", "load_mnist_test", "offline_from_env",
]


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """Load dataset `name` (one of DATASETS); with `download`, missing files are fetched into the cache first."""
    dirs = data_dirs(data_dir)
    if name == binarized.NAME:
        return binarized.load(dirs, download)
    if name == mnist.NAME:
        return mnist.load(dirs, download)
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def load_mnist_test(data_dir: str | Path | None = None,
                    download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Grayscale MNIST test images [10000, 28, 28] float32 in [0, 1] and int64 labels [10000]."""
    return mnist.load_test(data_dirs(data_dir), download)
