"""The Dataset record handed to trainers, and dynamic binarization."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dataset:
    """Train/valid/test images as [N, 784] float32, with provenance.

    `dynamic` datasets hold grayscale intensities in [0, 1] that the trainer binarizes afresh each epoch with
    `binarize`; static ones already hold {0, 1}.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor | None
    dynamic: bool
    digest: str
    source: str


def combined_digest(name: str, parts: Iterable[str]) -> str:
    """Short (16 hex) digest naming the exact content a dataset was built from."""
    return hashlib.sha256(":".join([name, *parts]).encode()).hexdigest()[:16]


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli(x) sample of intensities `x` in [0, 1]: same shape, dtype and device, values in {0, 1}."""
    if not x.is_floating_point():
        raise TypeError(f"binarize needs floating-point intensities in [0, 1]; got {x.dtype}")
    return torch.bernoulli(x, generator=generator)
