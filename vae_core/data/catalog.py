"""The built-in datasets (`DATASETS`, found by `vae_core.registry` as POSTERIORS / PRIORS are for families).

Each entry says what the data is (kind, image shape, the likelihoods that fit it, its split sizes as published)
and how to load it; the module named in `module` declares its files, canonical URLs and digests.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vae_core.data import binarized, caltech, frey, mnist, omniglot
from vae_core.data.dataset import DEFAULT_SPLIT_SEED, Dataset  # noqa: F401  (re-exported beside DATASETS)
from vae_core.data.errors import DataError
from vae_core.registry import entry_points, resolve

KINDS: dict[str, tuple[str, ...]] = {
    "binary": ("bernoulli",),  # static {0, 1}
    "grayscale": ("bernoulli",),  # intensities in [0, 1], binarized afresh for every training batch
    "8bit": ("discretized-logistic",),  # v / 255, v an integer in 0..255
}
"""Data kind -> the `model.likelihood` values that fit it, the first the default."""

@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: `load(dirs, download, split_seed)` returns its Dataset with `splits` sizes."""

    name: str
    kind: str
    image_shape: tuple[int, int]
    splits: tuple[int, int, int]
    load: Callable[[Sequence[Path], bool, int], Dataset]
    module: str  # the module declaring files, URLs and digests
    source: str  # one line: what it is and where it comes from
    uses_split_seed: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dataset {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @property
    def likelihoods(self) -> tuple[str, ...]:
        return KINDS[self.kind]

    @property
    def data_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


def _fixed(load: Callable[[Sequence[Path], bool], Dataset]) -> Callable[[Sequence[Path], bool, int], Dataset]:
    return lambda dirs, download, split_seed: load(dirs, download)


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("binarized-mnist", "binary", (28, 28), (50000, 10000, 10000), _fixed(binarized.load),
                binarized.__name__, "statically binarized MNIST (Larochelle & Murray 2011), splits as published"),
    DatasetSpec("mnist-dynamic", "grayscale", (28, 28), (50000, 10000, 10000), _fixed(mnist.load),
                mnist.__name__, "grayscale MNIST; validation = the last 10,000 training images"),
    DatasetSpec("caltech101-silhouettes", "binary", (28, 28), (4100, 2264, 2307), caltech.load,
                caltech.__name__, "Caltech-101 Silhouettes 28x28 split 1 (Marlin et al. 2010), modelled as 1 - x"),
    DatasetSpec("fashion-mnist", "grayscale", (28, 28), (50000, 10000, 10000), _fixed(mnist.load_fashion),
                mnist.__name__, "Fashion-MNIST (Xiao et al. 2017); validation = the last 10,000 training images"),
    DatasetSpec("frey-faces", "8bit", (28, 20), frey.SIZES, frey.load, frey.__name__,
                "Frey Faces, 1965 8-bit images, seeded shuffle into 1565 / 200 / 200", uses_split_seed=True),
    DatasetSpec("omniglot", "grayscale", (28, 28), (24345 - omniglot.VALID_SIZE, omniglot.VALID_SIZE, 8070),
                omniglot.load, omniglot.__name__, "Omniglot 28x28 (IWAE paper's chardata.mat); validation = the "
                "last 1,345 of a seeded permutation; untested on the real file", uses_split_seed=True),
)}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry `name`; DataError with a close match for an unknown name."""
    if name in DATASETS:
        return DATASETS[name]
    if ":" in str(name) or name in entry_points("dataset"):
        return resolve("dataset", name).obj  # a `vaebench.datasets` plugin or 'module.path:NAME' (errors: one line)
    close = difflib.get_close_matches(str(name), list(DATASETS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint}; choose one of: {', '.join(DATASETS)}")


def train_examples() -> dict[str, int]:
    """Training-set size of every dataset, as its entry declares."""
    return {name: spec.splits[0] for name, spec in DATASETS.items()}
