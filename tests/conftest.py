"""Shared fixtures: the real datasets (skip locally, fail in CI when absent), an isolated cache, synthetic data."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# `@pytest.mark.parametrize("device", DEVICES)`: every such test also runs on CUDA where torch sees a GPU; the CUDA
# cases carry the `cuda` marker (`pytest -m cuda`: what `make gpu-check` runs), as must every CUDA-only test
DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                            reason="torch sees no CUDA device")])]


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test writes its data cache under a session temp folder, never ~/.cache, and no command downloads
    on first use unless its test allows it (VAEBENCH_OFFLINE); MLflow's telemetry is off."""
    patch = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("vaebench-cache")
    patch.setenv("VAEBENCH_CACHE", str(cache))
    patch.setenv("VAEBENCH_OFFLINE", "1")
    patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # the tests' MLflow sends nothing anywhere
    yield cache
    patch.undo()


def _shared_data() -> Path | None:
    env = os.environ.get("VAEBENCH_DATA", "").strip()
    path = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
    return path.resolve() if path.is_dir() else None


@pytest.fixture
def float64() -> Iterator[None]:
    """float64 and a fixed global seed (module inits draw from it) for one test; the dtype is restored."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small tensors on a shared 2-core machine: intra-op threads cost far more than they give."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder with the real datasets ($VAEBENCH_DATA, else ../shared/data); CI may never skip these tests."""
    path = _shared_data()
    if path is None:
        message = "real datasets not found: set VAEBENCH_DATA or provide ../shared/data beside the repo"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir(shared_data_dir: Path) -> Path:
    """Alias of `shared_data_dir`."""
    return shared_data_dir


@pytest.fixture(scope="session")
def binarized_mnist(shared_data_dir: Path):
    """The real binarized MNIST, parsed once per session (later loads hit the session cache)."""
    from vae_core.data import load_dataset

    return load_dataset("binarized-mnist", shared_data_dir)


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $VAEBENCH_DATA and a fresh per-test cache folder (returned), so only explicit folders are searched."""
    cache = tmp_path / "cache"
    monkeypatch.delenv("VAEBENCH_DATA", raising=False)
    monkeypatch.setenv("VAEBENCH_CACHE", str(cache))
    return cache


class Synthetic:
    """Writers for tiny synthetic dataset files and registry patches that make the loaders accept them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.rng = np.random.default_rng(0)

    def bits(self, rows: int, cols: int = 784, p: float = 0.2) -> np.ndarray:
        return (self.rng.random((rows, cols)) < p).astype(np.uint8)

    def pixels(self, *shape: int) -> np.ndarray:
        return self.rng.integers(0, 256, size=shape, dtype=np.uint8)

    @staticmethod
    def amat_text(x: np.ndarray) -> bytes:
        return "".join(" ".join(map(str, row)) + "\n" for row in x.tolist()).encode()

    def write_amat(self, path: Path, x: np.ndarray) -> Path:
        text = self.amat_text(x)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(text) if path.name.endswith(".gz") else text)
        return path

    @staticmethod
    def idx_bytes(x: np.ndarray) -> bytes:
        header = bytes([0, 0, 0x08, x.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in x.shape)
        return header + x.astype(np.uint8).tobytes()

    def write_idx(self, path: Path, x: np.ndarray) -> Path:
        data = self.idx_bytes(x)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
        return path

    def patch_binarized(self, splits: dict[str, np.ndarray]) -> None:
        """Make the registry expect exactly these arrays (shape and packed-bits digest)."""
        from vae_core.data import formats, sources

        for split, x in splits.items():
            spec = sources.AmatSpec(split, f"binarized_mnist_{split}.amat", x.shape[0], x.shape[1],
                                    formats.packed_sha256(x))
            self.monkeypatch.setitem(sources.BINARIZED_SPLITS, split, spec)

    def patch_idx(self, key: str, x: np.ndarray, gz_path: Path | None = None) -> None:
        """Make the registry expect `x` for IDX file `key`, with the md5 of the `.gz` at `gz_path`."""
        from vae_core.data import sources

        spec = sources.IDX_FILES[key]
        raw = self.idx_bytes(x)
        md5 = hashlib.md5(gz_path.read_bytes()).hexdigest() if gz_path is not None else "0" * 32
        self.monkeypatch.setitem(sources.IDX_FILES, key, sources.IdxSpec(
            key, spec.filename, tuple(x.shape), md5, hashlib.sha256(raw).hexdigest()))

    def binarized_set(self, root: Path, gz: bool = True, subdir: bool = True,
                      rows: tuple[int, int, int] = (20, 6, 5)) -> dict[str, np.ndarray]:
        """Write train/valid/test splits under `root` and patch the registry to expect them."""
        splits = {s: self.bits(n) for s, n in zip(("train", "valid", "test"), rows)}
        folder = root / "binarized_mnist" if subdir else root
        for split, x in splits.items():
            self.write_amat(folder / f"binarized_mnist_{split}.amat{'.gz' if gz else ''}", x)
        self.patch_binarized(splits)
        return splits


@pytest.fixture
def synth(monkeypatch: pytest.MonkeyPatch) -> Synthetic:
    return Synthetic(monkeypatch)
