"""Frey Faces (Brendan Frey; distributed by Sam Roweis): 1965 8-bit grayscale images of 28x20, held as v / 255.

Two files hold the same images: the canonical `frey_rawface.mat` (key `ff`, 560 x 1965 uint8; the images are
`ff.T`, row-major 28x20), which the downloader fetches, and `freyfaces.pkl`, the Python 2 pickle of a one-element
list holding the (1965, 560) uint8 array that the VampPrior and Sylvester-flow codes read. The pickle is read with
`pickles.load_arrays` (numpy array reconstruction only). Either is verified by the sha256 of the decoded uint8
array; the pickle also by the sha256 of its bytes.

No split is published: the papers shuffle with a seed and cut 1565 / 200 / 200 (`seeded_permutation`); the seed
is `data.split_seed` (the Sylvester-flow code's default 123; its paper averages seeds 123, 321 and 231).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vae_core.data import formats, pickles
from vae_core.data.dataset import DEFAULT_SPLIT_SEED, Dataset, combined_digest, images_tensor, seeded_permutation
from vae_core.data.errors import ChecksumError, CorruptDataError
from vae_core.data.files import FIX, RemoteFile, load_file, locate

NAME = "frey-faces"
SHAPE = (28, 20)
SIZES = (1565, 200, 200)
MAT = RemoteFile("freyfaces", "frey_rawface.mat", ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",))
PICKLE = RemoteFile("freyfaces", "freyfaces.pkl", (),
                    "sha256:3b69410c6a5fd6e03f09012905168be3712373a094a776f7e58fcd0670d2138a")
CONTENT_SHA256 = "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"
"""sha256 of the (1965, 560) uint8 images in file order, C-contiguous bytes."""


def verify(x: np.ndarray, where: str, key: str) -> np.ndarray:
    """The images as a C-contiguous (sum(SIZES), 560) uint8 array, checked for shape, range and content."""
    formats.check_images(x, sum(SIZES), SHAPE[0] * SHAPE[1], "uint8", where, key)
    x = np.ascontiguousarray(x, dtype=np.uint8)
    digest = hashlib.sha256(x.tobytes()).hexdigest()
    if digest != CONTENT_SHA256:
        raise ChecksumError(f"{where}: content sha256 mismatch: expected {CONTENT_SHA256}, got {digest}; {FIX}")
    return x


def decode_mat(path: Path, where: str) -> np.ndarray:
    ff = formats.read_mat(path, ("ff",), where)["ff"]  # [560, 1965]
    return verify(ff.T, where, "ff.T")


def decode_pickle(path: Path, where: str) -> np.ndarray:
    obj = pickles.load_arrays(path, where)
    if not (isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], np.ndarray)):
        raise CorruptDataError(f"{where}: expected a pickled list holding one image array; got {type(obj).__name__}")
    return verify(obj[0], where, "the pickled array")


def read(dirs: Sequence[Path], download: bool = False) -> tuple[np.ndarray, Path]:
    """The verified images and their file: the pickle where one is found, else the .mat (downloaded if allowed)."""
    if locate(PICKLE, dirs) is not None:
        return load_file(PICKLE, dirs, False, decode_pickle)
    return load_file(MAT, dirs, download, decode_mat)


def split(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle the rows with `seeded_permutation(len, seed)`, then cut train / valid / test (SIZES)."""
    shuffled = x[seeded_permutation(x.shape[0], seed)]
    n_train, n_valid, _ = SIZES
    return shuffled[:n_train], shuffled[n_train:n_train + n_valid], shuffled[n_train + n_valid:]


def load(dirs: Sequence[Path], download: bool = False, split_seed: int = DEFAULT_SPLIT_SEED) -> Dataset:
    """frey-faces: 8-bit images as float32 v / 255, split by `split_seed`."""
    x, path = read(dirs, download)
    train, valid, test = (images_tensor(part, 255.0) for part in split(x, split_seed))
    return Dataset(
        name=NAME, train=train, valid=valid, test=test, test_labels=None, dynamic=False, kind="8bit",
        image_shape=SHAPE, digest=combined_digest(NAME, [CONTENT_SHA256, f"split_seed={split_seed}"]),
        source=str(path.parent),
    )
