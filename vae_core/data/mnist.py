"""IDX datasets in torchvision's layout: grayscale MNIST (its test set, and mnist-dynamic) and Fashion-MNIST.

Both are grayscale, dynamically binarized in training: the last `valid_size` training images are the validation
split, t10k the test split (the runner binarizes validation and test once, with a fixed seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vae_core.data import formats, sources
from vae_core.data.dataset import Dataset, combined_digest
from vae_core.data.errors import ChecksumError, CorruptDataError
from vae_core.data.files import FIX as _FIX
from vae_core.data.files import obtain
from vae_core.data.paths import cache_dir, find_file

NAME = "mnist-dynamic"


@dataclass(frozen=True)
class IdxFamily:
    """A set of IDX files under one folder: its tables are looked up at call time (tests swap them)."""

    label: str  # as listed by `vaebench data`
    subdir: str
    files: Callable[[], dict[str, sources.IdxSpec]]
    mirrors: Callable[[], list[str]]

    @property
    def layout(self) -> str:
        return f"{self.subdir}/<file> or <file>"


MNIST = IdxFamily("mnist-grayscale", sources.MNIST_SUBDIR, lambda: sources.IDX_FILES, sources.mnist_mirrors)
FASHION = IdxFamily("fashion-mnist", sources.FASHION_SUBDIR, lambda: sources.FASHION_IDX_FILES,
                    sources.fashion_mirrors)


@dataclass(frozen=True)
class IdxFile:
    """A decoded, shape-checked IDX file; `check` says how its content was verified: md5, sha256 or unverified."""

    array: np.ndarray
    path: Path
    sha256: str
    check: str


def candidates(filename: str, subdir: str = sources.MNIST_SUBDIR) -> list[str]:
    """Relative paths tried inside each data folder, gzipped first (its published md5 can be checked)."""
    return [f"{subdir}/{filename}.gz", f"{subdir}/{filename}", f"{filename}.gz", filename]


def decode_idx(path: Path, spec: sources.IdxSpec, where: str | None = None) -> IdxFile:
    """Parse and verify one IDX file: structure, expected shape, label range, then md5 (`.gz`) or sha256."""
    where = where or str(path)
    data = formats.read_bytes(path)
    array = formats.parse_idx(data, where)
    if array.shape != spec.shape:
        raise CorruptDataError(f"{where}: IDX shape {'x'.join(map(str, array.shape))}, expected "
                               f"{'x'.join(map(str, spec.shape))}; {_FIX}")
    if array.ndim == 1 and array.size and (array.min() < 0 or array.max() > 9):
        raise CorruptDataError(f"{where}: labels outside 0..9; {_FIX}")
    sha256 = hashlib.sha256(data).hexdigest()
    if path.name.endswith(".gz"):
        md5 = formats.file_digest(path, "md5")
        if md5 != spec.md5_gz:
            raise ChecksumError(f"{where}: md5 mismatch: expected {spec.md5_gz}, got {md5}; {_FIX}")
        check = "md5"
    elif spec.sha256_raw is not None:
        if sha256 != spec.sha256_raw:
            raise ChecksumError(f"{where}: sha256 mismatch: expected {spec.sha256_raw}, got {sha256}; {_FIX}")
        check = "sha256"
    else:
        check = "unverified"
    return IdxFile(array, path, sha256, check)


def locate_idx(key: str, dirs: Sequence[Path], family: IdxFamily = MNIST) -> Path | None:
    """Where the IDX file `key` (e.g. 't10k-images') is found first, or None."""
    return find_file(candidates(family.files()[key].filename, family.subdir), dirs)


def load_idx(key: str, dirs: Sequence[Path], download: bool = False, family: IdxFamily = MNIST) -> IdxFile:
    """One verified IDX file; downloads it into the cache if missing (or corrupt in the cache) and allowed."""
    spec = family.files()[key]
    name = spec.filename + ".gz"
    return obtain(candidates(spec.filename, family.subdir), dirs, download, cache_dir() / family.subdir / name,
                  lambda: [base + name for base in family.mirrors()],
                  lambda path, where: decode_idx(path, spec, where), f"{spec.filename}(.gz)", family.layout)[0]


def _images(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).to(torch.float32).div_(255.0)


def load_test(dirs: Sequence[Path], download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Grayscale test images [10000, 28, 28] float32 in [0, 1] and their int64 labels [10000]."""
    images = load_idx("t10k-images", dirs, download)
    labels = load_idx("t10k-labels", dirs, download)
    return _images(images.array), torch.from_numpy(labels.array.astype(np.int64))


def load_grayscale(name: str, family: IdxFamily, held_out: int, dirs: Sequence[Path], download: bool) -> Dataset:
    """The first N-V train images for training, the last V (`held_out`) for validation, t10k for test."""
    train = load_idx("train-images", dirs, download, family)
    test = load_idx("t10k-images", dirs, download, family)
    labels = load_idx("t10k-labels", dirs, download, family)
    flat = _images(train.array).reshape(train.array.shape[0], -1)
    folders = list(dict.fromkeys(str(f.path.parent) for f in (train, test, labels)))
    return Dataset(
        name=name, train=flat[:-held_out], valid=flat[-held_out:],
        test=_images(test.array).reshape(test.array.shape[0], -1),
        test_labels=torch.from_numpy(labels.array.astype(np.int64)),
        dynamic=True, kind="grayscale", image_shape=(28, 28),
        digest=combined_digest(name, [f.sha256 for f in (train, test, labels)]),
        source="; ".join(folders),
    )


def load(dirs: Sequence[Path], download: bool = False) -> Dataset:
    """mnist-dynamic: 50000 / 10000 (the last training images) / 10000."""
    return load_grayscale(NAME, MNIST, sources.MNIST_VALID_SIZE, dirs, download)


def load_fashion(dirs: Sequence[Path], download: bool = False) -> Dataset:
    """fashion-mnist: 50000 / 10000 (the last training images) / 10000, as mnist-dynamic."""
    return load_grayscale("fashion-mnist", FASHION, sources.FASHION_VALID_SIZE, dirs, download)
