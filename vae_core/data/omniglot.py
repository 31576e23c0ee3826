"""Omniglot, 28x28 (the IWAE paper's `chardata.mat`, Burda et al. 2016): 24,345 training and 8,070 test images.

Keys `data` (784 x 24345) and `testdata` (784 x 8070), intensities in [0, 1]; as in the IWAE and VampPrior codes
the arrays are transposed and each row, a column-major 28x28 image, is reshaped in Fortran order (stored here
row-major, upright). The training images are put in the fixed order `seeded_permutation(24345, split_seed)` and
the last 1,345 are the validation split, as the IWAE code does with its seed 123 (`data.split_seed`'s default).
Grayscale: dynamically binarized in training (IWAE, VampPrior, Sylvester-flow codes). Verified by the file's git
blob id in the IWAE repository. Untested on the real file (it could not be brought to the development machines):
the loader is tested on synthetic files of the same MAT layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vae_core.data import formats
from vae_core.data.dataset import DEFAULT_SPLIT_SEED, Dataset, combined_digest, images_tensor, seeded_permutation
from vae_core.data.files import RemoteFile, load_file

NAME = "omniglot"
SIDE = 28
FILE = RemoteFile("omniglot", "chardata.mat",
                  ("https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat",),
                  "git-blob:016a3536ffe5e1d38e42563a18d7a78bfaf643ec")
SIZES = {"data": 24345, "testdata": 8070}
VALID_SIZE = 1345


def upright(columns: np.ndarray) -> np.ndarray:
    """[784, N] as stored -> [N, 784] row-major upright images (transpose, then Fortran-order reshape)."""
    rows = columns.T
    return rows.reshape(-1, SIDE, SIDE).transpose(0, 2, 1).reshape(rows.shape[0], SIDE * SIDE)


def decode(path: Path, where: str) -> dict[str, np.ndarray]:
    content = formats.read_mat(path, tuple(SIZES), where)
    out = {}
    for key, n in SIZES.items():
        x = content[key]
        formats.check_images(x.T, n, SIDE * SIDE, "unit", where, f"{key}.T")
        out[key] = upright(x.astype(np.float32))
    return out


def load(dirs: Sequence[Path], download: bool = False, split_seed: int = DEFAULT_SPLIT_SEED) -> Dataset:
    """omniglot: 23,000 / 1,345 / 8,070 grayscale images in [0, 1]."""
    arrays, path = load_file(FILE, dirs, download, decode)
    train = arrays["data"][seeded_permutation(arrays["data"].shape[0], split_seed)]
    content = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())).hexdigest()
    return Dataset(
        name=NAME, train=images_tensor(train[:-VALID_SIZE]), valid=images_tensor(train[-VALID_SIZE:]),
        test=images_tensor(arrays["testdata"]), test_labels=None, dynamic=True, kind="grayscale",
        image_shape=(SIDE, SIDE), digest=combined_digest(NAME, [FILE.digest, content, f"split_seed={split_seed}"]),
        source=str(path.parent),
    )
