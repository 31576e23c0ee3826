"""The Dataset record handed to trainers, and dynamic binarization."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_SPLIT_SEED = 123
"""`data.split_seed`'s default: the seed of the IWAE code's Omniglot permutation and of the Sylvester-flow code's
Frey Faces shuffle (datasets with published splits ignore it)."""


@dataclass(frozen=True)
class Dataset:
    """Train/valid/test images as [N, H*W] float32 (pixels row-major), with provenance.

    `kind` (see `vae_core.data.catalog.KINDS`): "binary" holds {0, 1}; "grayscale" holds intensities in [0, 1]
    that the trainer binarizes afresh for every batch with `binarize` (`dynamic` is True exactly for these);
    "8bit" holds v / 255 for integers v in 0..255 (exactly invertible by round(x * 255)).
    `kind` left empty is derived from `dynamic` (binary or grayscale).
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor | None
    dynamic: bool
    digest: str
    source: str
    kind: str = ""
    image_shape: tuple[int, int] = (28, 28)

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", "grayscale" if self.dynamic else "binary")
        if self.dynamic != (self.kind == "grayscale"):
            raise ValueError(f"dataset {self.name!r}: dynamic={self.dynamic} contradicts kind {self.kind!r}")
        pixels = self.image_shape[0] * self.image_shape[1]
        for split in ("train", "valid", "test"):
            x = getattr(self, split)
            if x.ndim != 2 or x.shape[1] != pixels:
                raise ValueError(f"dataset {self.name!r}: {split} has shape {tuple(x.shape)}, expected "
                                 f"[N, {pixels}] for images of {self.image_shape[0]}x{self.image_shape[1]}")


def combined_digest(name: str, parts: Iterable[str]) -> str:
    """Short (16 hex) digest naming the exact content a dataset was built from."""
    return hashlib.sha256(":".join([name, *parts]).encode()).hexdigest()[:16]


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli(x) sample of intensities `x` in [0, 1]: same shape, dtype and device, values in {0, 1}."""
    if not x.is_floating_point():
        raise TypeError(f"binarize needs floating-point intensities in [0, 1]; got {x.dtype}")
    return torch.bernoulli(x, generator=generator)


def seeded_permutation(n: int, seed: int) -> np.ndarray:
    """numpy's legacy RandomState(seed).permutation(n): the order `np.random.seed(seed); np.random.shuffle(x)`
    puts the rows of x in, as the IWAE (Omniglot) and Sylvester-flow (Frey Faces) codes shuffle before splitting."""
    return np.random.RandomState(seed).permutation(n)


def images_tensor(x: np.ndarray, scale: float = 1.0) -> torch.Tensor:
    """[N, P] float32 copy of `x` divided by `scale` (255 for 8-bit data)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
    return t.div_(scale) if scale != 1.0 else t
