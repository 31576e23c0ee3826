"""What the datasets are: file names, expected shapes, published digests and download mirrors.

Loaders read these tables at call time, so tests can swap in tiny synthetic specs with `monkeypatch`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class AmatSpec:
    """One split of statically binarized MNIST: a text `.amat` of `rows` lines of `cols` 0/1 values."""

    split: str
    filename: str
    rows: int
    cols: int
    sha256: str  # of numpy.packbits(X_uint8, axis=None).tobytes(), X in file order


@dataclass(frozen=True)
class LabelsSpec:
    """Digit labels of the binarized test rows, one integer a line (not part of the canonical dataset)."""

    filename: str
    rows: int
    sha256: str  # of the labels as uint8 bytes


@dataclass(frozen=True)
class IdxSpec:
    """One IDX file of grayscale MNIST, in torchvision's layout (`MNIST/raw/<filename>[.gz]`)."""

    key: str
    filename: str
    shape: tuple[int, ...]
    md5_gz: str  # torchvision's published md5 of `<filename>.gz`
    sha256_raw: str | None  # sha256 of the uncompressed file, where known


BINARIZED_SUBDIR = "binarized_mnist"
MNIST_SUBDIR = "MNIST/raw"

BINARIZED_SPLITS: dict[str, AmatSpec] = {
    "train": AmatSpec("train", "binarized_mnist_train.amat", 50000, 784,
                      "727146c35424b019f3e350e1e69faa05644a0abaf787e3f4e1a9632220a13906"),
    "valid": AmatSpec("valid", "binarized_mnist_valid.amat", 10000, 784,
                      "a256ac44ae26be720fad8616a05ed6ecfd1619930d9a208379bb2a4405df5b6d"),
    "test": AmatSpec("test", "binarized_mnist_test.amat", 10000, 784,
                     "9fcd8da6f0fdf09b2ba30fe63a0bb784042a0de82563172530229b983e294ff2"),
}

BINARIZED_TEST_LABELS = LabelsSpec("binarized_mnist_test_labels.txt", 10000,
                                   "f7cd9d3a7438833ddaff2865a3ef3497a9479b8a1fc1e2dc2db0faf6648419c2")

IDX_FILES: dict[str, IdxSpec] = {
    "train-images": IdxSpec("train-images", "train-images-idx3-ubyte", (60000, 28, 28),
                            "f68b3c2dcbeaaa9fbdd348bbdeb94873", None),
    "train-labels": IdxSpec("train-labels", "train-labels-idx1-ubyte", (60000,),
                            "d53e105ee54ea40749a09fcbcd1e9432",
                            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images": IdxSpec("t10k-images", "t10k-images-idx3-ubyte", (10000, 28, 28),
                           "9fb629c4189551a2d022fa330f9573f3",
                           "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels": IdxSpec("t10k-labels", "t10k-labels-idx1-ubyte", (10000,),
                           "ec29112dd5afa0611ce80d1b7f02629c",
                           "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}

MNIST_VALID_SIZE = 10000
"""mnist-dynamic holds out the last this-many training images as the validation split."""

FASHION_SUBDIR = "FashionMNIST/raw"
FASHION_IDX_FILES: dict[str, IdxSpec] = {  # md5: the dataset's own README; sha256: of the gunzipped files
    "train-images": IdxSpec("train-images", "train-images-idx3-ubyte", (60000, 28, 28),
                            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels": IdxSpec("train-labels", "train-labels-idx1-ubyte", (60000,),
                            "25c81989df183df01b3e8a0aad5dffbe",
                            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images": IdxSpec("t10k-images", "t10k-images-idx3-ubyte", (10000, 28, 28),
                           "bef4ecab320f06d8554ea6380940ec79",
                           "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels": IdxSpec("t10k-labels", "t10k-labels-idx1-ubyte", (10000,),
                           "bb300cfdad3c16e7a12a480ee83cd310",
                           "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
FASHION_VALID_SIZE = 10000
"""fashion-mnist holds out the last this-many training images as the validation split (as mnist-dynamic)."""

BINARIZED_MNIST_MIRRORS: tuple[str, ...] = (
    "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
)
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

FASHION_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)

ENV_MIRROR = "VAEBENCH_MIRROR"
"""One base URL tried before the canonical sources, laid out like a data folder (and the cache):
`<base>/binarized_mnist/binarized_mnist_{train,valid,test}.amat`, `<base>/MNIST/raw/<name>-ubyte.gz`,
`<base>/FashionMNIST/raw/<name>-ubyte.gz`, and each other dataset's `<base>/<subdir>/<file>`."""
ENV_BINARIZED_MIRRORS = "VAEBENCH_BINARIZED_MNIST_URL"
ENV_MNIST_MIRRORS = "VAEBENCH_MNIST_MIRRORS"
ENV_DOWNLOAD_TIMEOUT = "VAEBENCH_DOWNLOAD_TIMEOUT"
DOWNLOAD_TIMEOUT_S = 30.0


def _mirrors(env: str, default: tuple[str, ...]) -> list[str]:
    raw = os.environ.get(env, "").strip()
    bases = re.split(r"[\s,]+", raw) if raw else list(default)
    return [b if b.endswith("/") else b + "/" for b in bases if b]


def mirror_bases(subdir: str) -> list[str]:
    """$VAEBENCH_MIRROR's base URL for files under `subdir` of a data folder, or none when it is unset."""
    base = os.environ.get(ENV_MIRROR, "").strip()
    return [f"{base.rstrip('/')}/{subdir}/"] if base else []


def binarized_mirrors() -> list[str]:
    """Base URLs for the binarized `.amat` files, in the order to try: $VAEBENCH_MIRROR's, then the defaults
    (or $VAEBENCH_BINARIZED_MNIST_URL's list in their place)."""
    return mirror_bases(BINARIZED_SUBDIR) + _mirrors(ENV_BINARIZED_MIRRORS, BINARIZED_MNIST_MIRRORS)


def mnist_mirrors() -> list[str]:
    """Base URLs for the IDX `.gz` files, in the order to try: $VAEBENCH_MIRROR's, then the defaults (or
    $VAEBENCH_MNIST_MIRRORS's list in their place)."""
    return mirror_bases(MNIST_SUBDIR) + _mirrors(ENV_MNIST_MIRRORS, MNIST_MIRRORS)


def download_timeout() -> float:
    """Seconds to wait on a connection or a read before giving up on a mirror."""
    try:
        return float(os.environ.get(ENV_DOWNLOAD_TIMEOUT, DOWNLOAD_TIMEOUT_S))
    except ValueError:
        return DOWNLOAD_TIMEOUT_S


def fashion_mirrors() -> list[str]:
    """Base URLs for the Fashion-MNIST `.gz` files: $VAEBENCH_MIRROR's, then the dataset's own."""
    return mirror_bases(FASHION_SUBDIR) + list(FASHION_MIRRORS)
