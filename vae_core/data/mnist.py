"""Grayscale MNIST from IDX files (torchvision layout): the test set, and mnist-dynamic for dynamic binarization."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vae_core.data import formats, sources
from vae_core.data.dataset import Dataset, combined_digest
from vae_core.data.download import fetch
from vae_core.data.errors import ChecksumError, CorruptDataError
from vae_core.data.paths import cache_dir, find_file, missing_error

NAME = "mnist-dynamic"
_LAYOUT = f"{sources.MNIST_SUBDIR}/<file> or <file>"
_FIX = "delete it and run `vaebench data --download`, or point --data-dir / VAEBENCH_DATA at a good copy"


@dataclass(frozen=True)
class IdxFile:
    """A decoded, shape-checked IDX file; `check` says how its content was verified: md5, sha256 or unverified."""

    array: np.ndarray
    path: Path
    sha256: str
    check: str


def candidates(filename: str) -> list[str]:
    """Relative paths tried inside each data folder, gzipped first (its published md5 can be checked)."""
    sub = sources.MNIST_SUBDIR
    return [f"{sub}/{filename}.gz", f"{sub}/{filename}", f"{filename}.gz", filename]


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


def _download(spec: sources.IdxSpec) -> Path:
    name = spec.filename + ".gz"
    dest = cache_dir() / sources.MNIST_SUBDIR / name

    def verify(tmp: Path, url: str) -> None:
        decode_idx(tmp, spec, url)

    return fetch([base + name for base in sources.mnist_mirrors()], dest, verify)


def _in_cache(path: Path) -> bool:
    return path.resolve().is_relative_to(cache_dir().resolve())


def locate_idx(key: str, dirs: Sequence[Path]) -> Path | None:
    """Where the IDX file `key` (e.g. 't10k-images') is found first, or None."""
    return find_file(candidates(sources.IDX_FILES[key].filename), dirs)


def load_idx(key: str, dirs: Sequence[Path], download: bool = False) -> IdxFile:
    """One verified IDX file; downloads it into the cache if missing (or corrupt in the cache) and allowed."""
    spec = sources.IDX_FILES[key]
    path = locate_idx(key, dirs)
    if path is None:
        if not download:
            raise missing_error(f"{spec.filename}(.gz)", _LAYOUT, dirs)
        path = _download(spec)
    try:
        return decode_idx(path, spec)
    except CorruptDataError:
        if not (download and _in_cache(path)):
            raise
        path.unlink(missing_ok=True)
        return decode_idx(_download(spec), spec)


def _images(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).to(torch.float32).div_(255.0)


def load_test(dirs: Sequence[Path], download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Grayscale test images [10000, 28, 28] float32 in [0, 1] and their int64 labels [10000]."""
    images = load_idx("t10k-images", dirs, download)
    labels = load_idx("t10k-labels", dirs, download)
    return _images(images.array), torch.from_numpy(labels.array.astype(np.int64))


def load(dirs: Sequence[Path], download: bool = False) -> Dataset:
    """mnist-dynamic: the first 60000-V train images for training, the last V for validation, t10k for test."""
    train = load_idx("train-images", dirs, download)
    test = load_idx("t10k-images", dirs, download)
    labels = load_idx("t10k-labels", dirs, download)
    held_out = sources.MNIST_VALID_SIZE
    flat = _images(train.array).reshape(train.array.shape[0], -1)
    folders = list(dict.fromkeys(str(f.path.parent) for f in (train, test, labels)))
    return Dataset(
        name=NAME, train=flat[:-held_out], valid=flat[-held_out:],
        test=_images(test.array).reshape(test.array.shape[0], -1),
        test_labels=torch.from_numpy(labels.array.astype(np.int64)),
        dynamic=True,
        digest=combined_digest(NAME, [f.sha256 for f in (train, test, labels)]),
        source="; ".join(folders),
    )
