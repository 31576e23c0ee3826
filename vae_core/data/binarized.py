"""Statically binarized MNIST (Larochelle & Murray 2011): locate, parse, verify, cache, download."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vae_core.data import formats, sources
from vae_core.data.cache import decoded_path, load_packed, save_packed
from vae_core.data.dataset import Dataset, combined_digest
from vae_core.data.errors import ChecksumError, CorruptDataError
from vae_core.data.files import obtain
from vae_core.data.paths import cache_dir, find_file

NAME = "binarized-mnist"
SPLITS = ("train", "valid", "test")
_LAYOUT = f"{sources.BINARIZED_SUBDIR}/<file> or <file>"
_FIX = "delete it and run `vaebench data --download`, or point --data-dir / VAEBENCH_DATA at a good copy"


def candidates(filename: str) -> list[str]:
    """Relative paths tried inside each data folder: the shared layout first, then the folder itself."""
    sub = sources.BINARIZED_SUBDIR
    return [f"{sub}/{filename}", f"{sub}/{filename}.gz", filename, f"{filename}.gz"]


def decode_split(path: Path, spec: sources.AmatSpec, where: str | None = None) -> np.ndarray:
    """The verified (rows, cols) uint8 0/1 array of one split file, from the decoded cache when possible."""
    where = where or str(path)
    cached = decoded_path(Path(spec.filename).stem, spec.sha256, formats.file_digest(path, "sha256"))
    x = load_packed(cached, spec.rows, spec.cols, spec.sha256)
    if x is not None:
        return x
    x = formats.parse_amat(formats.read_bytes(path), spec.cols, where)
    if x.shape[0] != spec.rows:
        raise CorruptDataError(f"{where}: {x.shape[0]} rows, expected {spec.rows} (truncated or garbled); {_FIX}")
    digest = formats.packed_sha256(x)
    if digest != spec.sha256:
        raise ChecksumError(f"{where}: content sha256 mismatch: expected {spec.sha256}, got {digest}; {_FIX}")
    save_packed(cached, x)
    return x


def locate_split(split: str, dirs: Sequence[Path]) -> Path | None:
    """Where the file of `split` is found first, or None."""
    return find_file(candidates(sources.BINARIZED_SPLITS[split].filename), dirs)


def load_split(split: str, dirs: Sequence[Path], download: bool = False) -> tuple[np.ndarray, Path]:
    """One verified split as a uint8 array and the file it came from; downloads into the cache if allowed."""
    spec = sources.BINARIZED_SPLITS[split]
    return obtain(candidates(spec.filename), dirs, download, cache_dir() / sources.BINARIZED_SUBDIR / spec.filename,
                  lambda: [base + spec.filename for base in sources.binarized_mirrors()],
                  lambda path, where: decode_split(path, spec, where), f"{spec.filename}(.gz)", _LAYOUT)


def load_test_labels(dirs: Sequence[Path]) -> tuple[np.ndarray, Path] | None:
    """Digit labels of the (digit-sorted) test split, if a labels file is present; verified against its digest."""
    spec = sources.BINARIZED_TEST_LABELS
    path = find_file([f"{sources.BINARIZED_SUBDIR}/{spec.filename}", spec.filename], dirs)
    if path is None:
        return None
    labels = formats.read_labels(path)
    if labels.shape != (spec.rows,):
        raise CorruptDataError(f"{path}: {labels.size} labels, expected {spec.rows}; {_FIX}")
    digest = hashlib.sha256(labels.astype(np.uint8).tobytes()).hexdigest()
    if digest != spec.sha256:
        raise ChecksumError(f"{path}: labels sha256 mismatch: expected {spec.sha256}, got {digest}; {_FIX}")
    return labels, path


def load(dirs: Sequence[Path], download: bool = False) -> Dataset:
    """The binarized-mnist Dataset: three verified splits as float32 {0, 1}, test labels when available."""
    arrays: dict[str, torch.Tensor] = {}
    folders: list[str] = []
    for split in SPLITS:
        x, path = load_split(split, dirs, download)
        arrays[split] = torch.from_numpy(x).to(torch.float32)
        if str(path.parent) not in folders:
            folders.append(str(path.parent))
    labels = load_test_labels(dirs)
    return Dataset(
        name=NAME, train=arrays["train"], valid=arrays["valid"], test=arrays["test"],
        test_labels=None if labels is None else torch.from_numpy(labels[0]),
        dynamic=False, kind="binary", image_shape=(28, 28),
        digest=combined_digest(NAME, [sources.BINARIZED_SPLITS[s].sha256 for s in SPLITS]),
        source="; ".join(folders),
    )
