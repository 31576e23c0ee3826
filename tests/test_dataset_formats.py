"""The readers of the new formats on tiny synthetic files: Caltech .mat (orientation, 1 - x), Frey pickle and .mat
(the restricted unpickler against hostile pickles), Omniglot chardata.mat (the IWAE permutation); broken files."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from tests.dataset_files import (Writes, arrow, caltech_files, frey_images, md5, omniglot_file,  # noqa: F401
                                 one_line, write_pickle)
from vae_core.data import ChecksumError, CorruptDataError, load_dataset
from vae_core.data import caltech, files, frey, pickles
from vae_core.data.dataset import seeded_permutation


def test_caltech_synthetic_upright_and_inverted(caltech_files, tmp_path: Path) -> None:
    caltech_files(tmp_path / "data")
    ds = load_dataset("caltech101-silhouettes", tmp_path / "data")
    assert ds.train.shape == (3, 784) and ds.test.shape == (2, 784)
    assert torch.equal(ds.train.reshape(3, 28, 28), torch.from_numpy(arrow(3)).float())  # upright, 1 = object


@pytest.mark.parametrize("damage, pattern", [
    ("value", r"train_data has values in \[0, 2\]; expected only 0/1"),
    ("shape", r"train_data has shape 3x783, expected 3x784"),
    ("truncate", r"not a readable MATLAB file"),
    ("md5", r"md5 mismatch"),
])
def test_caltech_bad_files(caltech_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str,
                           pattern: str) -> None:
    path = caltech_files(tmp_path / "data")
    if damage in ("value", "shape"):
        content = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
        content["train_data"] = (content["train_data"][:, :783] if damage == "shape"
                                 else np.where(content["train_data"] == 1, 2, 0).astype(np.uint8))
        scipy.io.savemat(path, content)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if damage != "md5":
        monkeypatch.setattr(caltech, "FILE", files.RemoteFile(caltech.FILE.subdir, caltech.FILE.filename, (),
                                                              f"md5:{md5(path)}"))
    else:
        path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CorruptDataError) as err:
        load_dataset("caltech101-silhouettes", tmp_path / "data")
    message = one_line(err)
    assert str(path) in message and re.search(pattern, message)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_frey_synthetic_pickle_and_mat_agree(frey_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             protocol: int) -> None:
    write_pickle(tmp_path / "p/freyfaces/freyfaces.pkl", [frey_images], monkeypatch, protocol)
    (tmp_path / "m/freyfaces").mkdir(parents=True)
    scipy.io.savemat(tmp_path / "m/freyfaces/frey_rawface.mat", {"ff": frey_images.T})
    a, b = load_dataset("frey-faces", tmp_path / "p", split_seed=5), load_dataset("frey-faces", tmp_path / "m",
                                                                                 split_seed=5)
    order = seeded_permutation(10, 5)
    expected = torch.from_numpy(frey_images[order]).float() / 255  # [10, 560]
    for ds in (a, b):
        assert torch.equal(torch.cat([ds.train, ds.valid, ds.test]), expected)
        assert (ds.train.shape[0], ds.valid.shape[0], ds.test.shape[0]) == (6, 2, 2)


@pytest.mark.parametrize("how", ["open", "system"])
@pytest.mark.parametrize("protocol", [0, 4])
def test_malicious_pickle_is_refused_and_never_runs(frey_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    how: str, protocol: int) -> None:
    target = tmp_path / "pwned"
    path = write_pickle(tmp_path / "data/freyfaces/freyfaces.pkl", [frey_images, Writes(target, how)],
                        monkeypatch, protocol)
    with pytest.raises(CorruptDataError) as err:
        load_dataset("frey-faces", tmp_path / "data")
    message = one_line(err)
    assert str(path) in message and "not allowed" in message
    assert ("open" if how == "open" else ".system") in message
    assert not target.exists()


def test_other_numpy_globals_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(np.load))
    with pytest.raises(CorruptDataError, match="numpy.*load, which is not allowed"):
        pickles.load_arrays(path)


@pytest.mark.parametrize("damage, pattern", [
    ("truncate", "not a readable pickle"),
    ("range", r"has values in \[0, 300\]; expected integer values 0..255"),
    ("shape", "has shape 10x559, expected 10x560"),
    ("content", "content sha256 mismatch"),
    ("bytes", "sha256 mismatch"),
])
def test_frey_bad_files(frey_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str,
                        pattern: str) -> None:
    x = {"shape": frey_images[:, :559], "content": 255 - frey_images}.get(damage, frey_images)
    if damage == "range":
        x = frey_images.astype(np.int64)
        x[0, 0], x[0, 1] = 300, 0
    path = write_pickle(tmp_path / "data/freyfaces/freyfaces.pkl", [x], monkeypatch)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
        monkeypatch.setattr(frey, "PICKLE", files.RemoteFile("freyfaces", "freyfaces.pkl", (), ""))
    if damage == "bytes":
        path.write_bytes(pickle.dumps([frey_images], protocol=4))  # same content, other bytes than pinned
    with pytest.raises(CorruptDataError) as err:
        load_dataset("frey-faces", tmp_path / "data")
    message = one_line(err)
    assert str(path) in message and re.search(pattern, message), message


def test_omniglot_synthetic(omniglot_file, tmp_path: Path) -> None:
    write, train, test = omniglot_file
    write(tmp_path / "data")
    ds = load_dataset("omniglot", tmp_path / "data")
    assert ds.kind == "grayscale" and ds.dynamic
    order = np.random.RandomState(123).permutation(12)  # the IWAE code's fixed permutation
    expected = torch.from_numpy(train[order].reshape(12, 784)).float()  # [12, 784]
    assert torch.equal(ds.train, expected[:9]) and torch.equal(ds.valid, expected[9:])
    assert torch.equal(ds.test, torch.from_numpy(test.reshape(4, 784)).float())
    assert bool((ds.train.reshape(-1, 28, 28)[:, 0, :] == 1).all())  # the bright row is the top row


def test_omniglot_bad_values_and_blob(omniglot_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write, train, _ = omniglot_file
    path = write(tmp_path / "data", train * 2)
    with pytest.raises(CorruptDataError) as err:
        load_dataset("omniglot", tmp_path / "data")
    assert str(path) in one_line(err) and "expected values in [0, 1]" in str(err.value)
    write(tmp_path / "data")
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(ChecksumError, match="git-blob mismatch"):
        load_dataset("omniglot", tmp_path / "data")
