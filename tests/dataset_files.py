"""Tiny synthetic dataset files in the real layouts (Caltech .mat, Frey .pkl/.mat, Omniglot chardata.mat) and the
fixtures that make the loaders expect them; shared by tests/test_datasets.py and tests/test_dataset_formats.py."""

from __future__ import annotations

import builtins
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vae_core.data import caltech, files, frey, omniglot


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def column_major(images: np.ndarray) -> np.ndarray:
    """[N, H, W] upright images -> [N, H*W] rows read column by column, as MATLAB stores them."""
    return images.transpose(0, 2, 1).reshape(images.shape[0], -1)


def arrow(n: int, side: int = 28) -> np.ndarray:
    """[n, side, side] uint8: the top row and left column set, nothing else (orientation shows)."""
    x = np.zeros((n, side, side), dtype=np.uint8)
    x[:, 0, :] = 1
    x[:, :, 0] = 1
    x[:, 0, -1] = 0  # breaks the transpose symmetry: the top row stops one short
    return x


class Writes:
    """Loading this pickle would create `path` (via the global named by `how`)."""

    def __init__(self, path: Path, how: str) -> None:
        self.path, self.how = path, how

    def __reduce__(self):
        if self.how == "open":
            return builtins.open, (str(self.path), "w")
        return os.system, (f"touch {self.path}",)


def write_pickle(path: Path, obj, monkeypatch: pytest.MonkeyPatch, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    monkeypatch.setattr(frey, "PICKLE", files.RemoteFile("freyfaces", "freyfaces.pkl", (),
                                                         f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"))
    return path


@pytest.fixture
def caltech_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path):
    """Write a tiny Caltech .mat (1 = background, column-major rows) and make the loader expect it."""
    def write(folder: Path, splits: dict[str, np.ndarray] | None = None) -> Path:
        objects = splits or {"train": arrow(3), "valid": arrow(2), "test": arrow(2)}
        stored = {key: column_major(1 - objects[s]) for s, (key, _, _) in caltech.SPLITS.items()}
        path = folder / "caltech101_silhouettes" / caltech.FILE.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(path, {**stored, "train_labels": np.ones((3, 1), np.uint8)})
        monkeypatch.setattr(caltech, "SPLITS", {s: (key, objects[s].shape[0], "")
                                                for s, (key, _, _) in caltech.SPLITS.items()})
        monkeypatch.setattr(caltech, "FILE", files.RemoteFile(caltech.FILE.subdir, caltech.FILE.filename,
                                                              caltech.FILE.urls, f"md5:{md5(path)}"))
        return path

    return write


@pytest.fixture
def frey_images(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> np.ndarray:
    """[10, 560] uint8 synthetic faces; the loader is made to expect them (sizes 6 / 2 / 2, content digest)."""
    x = np.random.default_rng(0).integers(8, 239, size=(10, 560), dtype=np.uint8)
    monkeypatch.setattr(frey, "SIZES", (6, 2, 2))
    monkeypatch.setattr(frey, "CONTENT_SHA256", hashlib.sha256(x.tobytes()).hexdigest())
    return x


@pytest.fixture
def omniglot_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path):
    """chardata.mat in the IWAE layout (data 784 x N, testdata 784 x M, float64 in [0, 1]) with 12 / 4 images."""
    rng = np.random.default_rng(1)
    train, test = rng.random((12, 28, 28)), rng.random((4, 28, 28))  # upright [N, 28, 28]
    train[:, 0, :] = 1.0  # a bright top row: orientation shows

    def write(folder: Path, data: np.ndarray = train) -> Path:
        path = folder / "omniglot" / "chardata.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(path, {"data": column_major(data).T, "testdata": column_major(test).T,
                                "target": np.zeros((50, 12)), "testtarget": np.zeros((50, 4))})
        monkeypatch.setattr(omniglot, "SIZES", {"data": data.shape[0], "testdata": 4})
        monkeypatch.setattr(omniglot, "VALID_SIZE", 3)
        monkeypatch.setattr(omniglot, "FILE", files.RemoteFile(
            "omniglot", "chardata.mat", omniglot.FILE.urls, f"git-blob:{files.git_blob_sha1(path.read_bytes())}"))
        return path

    return write, train, test


