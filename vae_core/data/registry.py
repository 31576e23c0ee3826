"""Dataset facts (stub: the data-layer branch of issue 19 replaces this file with the full registry)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str  # "binary" | "grayscale" (dynamically binarized) | "8bit" (v / 255, v integer 0..255)
    image_shape: tuple[int, int]  # (height, width), row-major; data_dim = height * width
    likelihoods: tuple[str, ...]  # model.likelihood values that fit; the first is the default
    splits: tuple[int, int, int]  # train / valid / test sizes


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("binarized-mnist", "binary", (28, 28), ("bernoulli",), (50_000, 10_000, 10_000)),
    DatasetSpec("mnist-dynamic", "grayscale", (28, 28), ("bernoulli",), (50_000, 10_000, 10_000)),
    DatasetSpec("caltech101-silhouettes", "binary", (28, 28), ("bernoulli",), (4_100, 2_264, 2_307)),
    DatasetSpec("fashion-mnist", "grayscale", (28, 28), ("bernoulli",), (50_000, 10_000, 10_000)),
    DatasetSpec("frey-faces", "8bit", (28, 20), ("discretized-logistic",), (1_565, 200, 200)),
    DatasetSpec("omniglot", "grayscale", (28, 28), ("bernoulli",), (23_000, 1_345, 8_070)),
)}
