"""Caltech-101 Silhouettes, 28x28, split 1 (Marlin et al. 2010): static binary, 4100 / 2264 / 2307 as published.

The file stores 1 = background; the VampPrior and Sylvester-flow codes model `1 - x` (1 = object), and so does
vaebench. MATLAB stores each image column-major: a row of the file is the 28x28 image read column by column, so it
is reshaped in Fortran order (as those codes do) to give the upright image, stored row-major.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vae_core.data import formats
from vae_core.data.dataset import Dataset, combined_digest, images_tensor
from vae_core.data.errors import ChecksumError
from vae_core.data.files import FIX, RemoteFile, load_file

NAME = "caltech101-silhouettes"
SIDE = 28
FILE = RemoteFile("caltech101_silhouettes", "caltech101_silhouettes_28_split1.mat",
                  ("https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",),
                  "md5:4483e9c14b188fd09937f9ea6f9ea777")
SPLITS: dict[str, tuple[str, int, str]] = {  # split: (key in the file, rows, packed-bits sha256 of 1 - x upright)
    "train": ("train_data", 4100, "15b51923d1f5dc0a9372922c926823293014c9edaa56ad37717a1510fe8dde87"),
    "valid": ("val_data", 2264, "6d9452f7bb8e95d48e556f436c49fbedf44505c50b20b3750ebe710ff81453dc"),
    "test": ("test_data", 2307, "66237cf83b2a99b7f6c3e5dfe2dfeb3900f7bf7dd82a73187e1c6c323bf9c0d2"),
}


def upright(rows: np.ndarray, side: int = SIDE) -> np.ndarray:
    """[N, side*side] rows of column-major images -> the same images row-major."""
    return rows.reshape(-1, side, side).transpose(0, 2, 1).reshape(rows.shape[0], side * side)


def decode(path: Path, where: str) -> dict[str, np.ndarray]:
    """The three splits as uint8 {0, 1} (1 = object), upright and row-major, shape- and content-checked."""
    content = formats.read_mat(path, tuple(key for key, _, _ in SPLITS.values()), where)
    out = {}
    for split, (key, rows, sha256) in SPLITS.items():
        x = content[key]
        formats.check_images(x, rows, SIDE * SIDE, "binary", where, key)
        x = 1 - upright(x.astype(np.uint8))
        digest = formats.packed_sha256(x)
        if sha256 and digest != sha256:
            raise ChecksumError(f"{where}: {key} content sha256 mismatch: expected {sha256}, got {digest}; {FIX}")
        out[split] = x
    return out


def load(dirs: Sequence[Path], download: bool = False, split_seed: int = 0) -> Dataset:
    """caltech101-silhouettes as published (split_seed unused: the splits are fixed by the file)."""
    splits, path = load_file(FILE, dirs, download, decode)
    return Dataset(
        name=NAME, train=images_tensor(splits["train"]), valid=images_tensor(splits["valid"]),
        test=images_tensor(splits["test"]), test_labels=None, dynamic=False, kind="binary",
        image_shape=(SIDE, SIDE), digest=combined_digest(NAME, [FILE.digest, *(s[2] for s in SPLITS.values())]),
        source=str(path.parent),
    )
