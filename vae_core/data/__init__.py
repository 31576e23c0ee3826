"""Datasets for vaebench, resolved by name through `registry.DATASETS` (binary, grayscale and 8-bit image sets).

Files are searched in `data_dirs()` order (explicit folder, $VAEBENCH_DATA, the cache), parsed strictly,
verified against published digests, cached in a fast decoded form, and downloaded into the cache on request.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vae_core.data import mnist
from vae_core.data.catalog import DATASETS, DEFAULT_SPLIT_SEED, KINDS, DatasetSpec, get_spec
from vae_core.data.dataset import Dataset, binarize
from vae_core.data.errors import ChecksumError, CorruptDataError, DataError, DownloadError, MissingDataError
from vae_core.data.paths import cache_dir, check_data_dir, data_dirs, offline_from_env

__all__ = [
    "DATASETS", "DEFAULT_SPLIT_SEED", "KINDS", "ChecksumError", "CorruptDataError", "DataError", "Dataset",
    "DatasetSpec", "DownloadError", "MissingDataError", "binarize", "cache_dir", "check_data_dir", "data_dirs",
    "get_spec", "load_dataset", "load_mnist_test", "offline_from_env",
]


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False,
                 split_seed: int = DEFAULT_SPLIT_SEED) -> Dataset:
    """Load dataset `name` (a key of DATASETS); with `download`, missing files are fetched into the cache first.
    `split_seed` orders the images of datasets without a published split (frey-faces, omniglot)."""
    spec = get_spec(name)
    return spec.load(data_dirs(data_dir), download, split_seed)


def load_mnist_test(data_dir: str | Path | None = None,
                    download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Grayscale MNIST test images [10000, 28, 28] float32 in [0, 1] and int64 labels [10000]."""
    return mnist.load_test(data_dirs(data_dir), download)
