"""The dataset registry and the literature's datasets (Caltech-101 Silhouettes, Fashion-MNIST, Frey Faces,
Omniglot): real shared files where present (skipped otherwise), one binarization convention, downloads from a
local mirror, bad data through the CLI. Format-level tests on synthetic files: tests/test_dataset_formats.py."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from tests.dataset_files import (Writes, caltech_files, frey_images, md5, omniglot_file, one_line,  # noqa: F401
                                 write_pickle)
from tests.test_download import server  # noqa: F401  (the local HTTP mirror fixture)
from vae_core.config import ConfigError
from vae_core.data import (DATASETS, DataError, Dataset, DownloadError, MissingDataError, caltech, files, load_dataset,
                           pickles, sources)
from vae_core.data.dataset import seeded_permutation

FASHION_MD5 = {"train-images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "train-labels": "25c81989df183df01b3e8a0aad5dffbe",
               "t10k-images": "bef4ecab320f06d8554ea6380940ec79", "t10k-labels": "bb300cfdad3c16e7a12a480ee83cd310"}
SHARED_SHA256 = {"freyfaces/freyfaces.pkl": "3b69410c6a5fd6e03f09012905168be3712373a094a776f7e58fcd0670d2138a",
                 "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat":
                     "eb6735e8d84b1850fabc5590124aab1755e90c9fd28123585324398405e1e42a"}


# ---- registry -----------------------------------------------------------------------------------------------------

def test_registry_entries_and_config_derive_from_it() -> None:
    from bench.grid.config import TRAIN_EXAMPLES, DataConfig

    expected = {"binarized-mnist": ("binary", (28, 28), (50000, 10000, 10000), ("bernoulli",)),
                "mnist-dynamic": ("grayscale", (28, 28), (50000, 10000, 10000), ("bernoulli",)),
                "caltech101-silhouettes": ("binary", (28, 28), (4100, 2264, 2307), ("bernoulli",)),
                "fashion-mnist": ("grayscale", (28, 28), (50000, 10000, 10000), ("bernoulli",)),
                "frey-faces": ("8bit", (28, 20), (1565, 200, 200), ("discretized-logistic",)),
                "omniglot": ("grayscale", (28, 28), (23000, 1345, 8070), ("bernoulli",))}
    assert {n: (s.kind, s.image_shape, s.splits, s.likelihoods) for n, s in DATASETS.items()} == expected
    assert TRAIN_EXAMPLES == {n: s.splits[0] for n, s in DATASETS.items()}
    assert all(DataConfig(dataset=name).dataset == name for name in DATASETS) and DataConfig().split_seed == 123


def test_unknown_dataset_suggests_a_close_name() -> None:
    from bench.grid.files import parse_grid

    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist")
    assert "did you mean 'fashion-mnist'?" in one_line(err)
    with pytest.raises(ConfigError, match="did you mean 'frey-faces'"):
        parse_grid({"data": {"dataset": "frey-face"}})


def test_dataset_record_kind_is_consistent() -> None:
    x = torch.zeros(2, 560)
    assert Dataset("d", x, x, x, None, False, "", "", "8bit", (28, 20)).dynamic is False
    assert Dataset("d", torch.zeros(2, 784), torch.zeros(2, 784), torch.zeros(2, 784), None, True, "", "").kind \
        == "grayscale"
    with pytest.raises(ValueError, match="contradicts"):
        Dataset("d", x, x, x, None, True, "", "", "8bit", (28, 20))
    with pytest.raises(ValueError, match="expected"):
        Dataset("d", x, x, x, None, False, "", "", "8bit", (28, 28))


def test_seeded_permutation_is_the_papers_shuffle() -> None:
    x = np.arange(40).reshape(20, 2)
    shuffled = x.copy()
    np.random.seed(123)
    np.random.shuffle(shuffled)  # the Sylvester-flow code's Frey shuffle; IWAE: RandomState(123).permutation
    assert np.array_equal(x[seeded_permutation(20, 123)], shuffled)
    assert np.array_equal(seeded_permutation(20, 123), np.random.RandomState(123).permutation(20))


def test_git_blob_id_matches_git() -> None:
    assert files.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert files.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


# ---- real shared files ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", sorted(SHARED_SHA256))
def test_shared_files_digests(shared_data_dir: Path, rel: str) -> None:
    assert hashlib.sha256((shared_data_dir / rel).read_bytes()).hexdigest() == SHARED_SHA256[rel]


def test_caltech_real(shared_data_dir: Path) -> None:
    ds = load_dataset("caltech101-silhouettes", shared_data_dir)
    assert md5(shared_data_dir / "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat") == \
        caltech.FILE.digest.removeprefix("md5:")
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((4100, 784), (2264, 784), (2307, 784))
    assert ds.kind == "binary" and not ds.dynamic and ds.image_shape == (28, 28)
    for x in (ds.train, ds.valid, ds.test):
        assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    assert round(float(ds.train.double().mean()), 4) == 0.4489  # of 1 - x: objects are 1
    raw = scipy.io.loadmat(shared_data_dir / "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat")
    first = 1 - raw["train_data"][0].reshape(28, 28, order="F")  # MATLAB's column-major image
    assert torch.equal(ds.train[0].reshape(28, 28), torch.from_numpy(first.astype(np.float32)))
    border = ds.train.reshape(-1, 28, 28)[:, [0, -1], :].mean()
    assert border < 0.2 < ds.train.reshape(-1, 28, 28)[:, 10:18, 10:18].mean()  # background 0 at the edges


def test_fashion_real(shared_data_dir: Path) -> None:
    ds = load_dataset("fashion-mnist", shared_data_dir)
    assert {k: s.md5_gz for k, s in sources.FASHION_IDX_FILES.items()} == FASHION_MD5
    for key, spec in sources.FASHION_IDX_FILES.items():
        assert md5(shared_data_dir / "FashionMNIST/raw" / f"{spec.filename}.gz") == FASHION_MD5[key]
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((50000, 784), (10000, 784), (10000, 784))
    assert ds.kind == "grayscale" and ds.dynamic and ds.test_labels.shape == (10000,)
    assert 0 <= float(ds.train.min()) and float(ds.train.max()) <= 1
    assert round(float(ds.train.double().mean()), 4) == 0.2855
    assert round(float(ds.test.double().mean()), 4) == 0.2868


def test_frey_real(shared_data_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset("frey-faces", shared_data_dir)
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((1565, 560), (200, 560), (200, 560))
    assert ds.kind == "8bit" and ds.image_shape == (28, 20) and ds.train.dtype == torch.float32
    every = torch.cat([ds.train, ds.valid, ds.test])  # [1965, 560]
    v = torch.round(every * 255)
    assert torch.equal(v / 255, every) and int(v.min()) == 8 and int(v.max()) == 238  # exactly v / 255
    assert round(float(ds.train.double().mean()), 4) == 0.6056
    with open(shared_data_dir / "freyfaces/freyfaces.pkl", "rb") as fh:
        data = pickles.ArrayUnpickler(fh, encoding="latin1").load()[0] / 255.0
    np.random.seed(123)
    np.random.shuffle(data)  # the Sylvester-flow code with its default --freyseed 123
    assert torch.equal(ds.train, torch.from_numpy(data[:1565]).float())
    assert torch.equal(ds.test, torch.from_numpy(data[1765:]).float())
    other = load_dataset("frey-faces", shared_data_dir, split_seed=321)
    assert not torch.equal(other.test, ds.test) and other.digest != ds.digest
    assert torch.equal(torch.cat([other.train, other.valid, other.test]).sort(0).values, every.sort(0).values)
    # the canonical .mat (ff = images.T) holds the same content and gives the same dataset
    images = (torch.round(every * 255).to(torch.uint8).numpy())[np.argsort(seeded_permutation(1965, 123))]
    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": images.T})
    from_mat = load_dataset("frey-faces", tmp_path)
    assert torch.equal(from_mat.train, ds.train) and from_mat.digest == ds.digest


def test_show_data_lists_every_dataset(shared_data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.commands.data import show_data

    assert show_data(shared_data_dir, download=False) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert name in out
    for text in ("4100 / 2264 / 2307", "0.4489", "1565 / 200 / 200", "0.6056", "0.2855", "23000 / 1345 / 8070"):
        assert text in out
    assert re.search(r"omniglot.*missing", out)


# ---- one convention for dynamically binarized sets ---------------------------------------------------------------

def test_fashion_follows_mnist_dynamic(synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       isolated: Path) -> None:
    from bench.grid.files import parse_grid
    from bench.tasks import prepare_data

    raw = tmp_path / "data/FashionMNIST/raw"
    train, test, labels = synth.pixels(30, 28, 28), synth.pixels(8, 28, 28), np.arange(8, dtype=np.uint8)
    for key, x in (("train-images", train), ("t10k-images", test), ("t10k-labels", labels)):
        spec = sources.FASHION_IDX_FILES[key]
        gz = synth.write_idx(raw / f"{spec.filename}.gz", x)
        monkeypatch.setitem(sources.FASHION_IDX_FILES, key, sources.IdxSpec(key, spec.filename, x.shape, md5(gz),
                                                                            None))
    monkeypatch.setattr(sources, "FASHION_VALID_SIZE", 10)
    ds = load_dataset("fashion-mnist", tmp_path / "data")
    flat = torch.from_numpy(train).reshape(30, 784).float() / 255
    assert torch.equal(ds.train, flat[:20]) and torch.equal(ds.valid, flat[20:])
    (cfg,) = parse_grid({"data": {"dataset": "fashion-mnist"}})
    a, b = (prepare_data(cfg, str(tmp_path / "data"), torch.device("cpu")) for _ in range(2))
    assert a.dynamic and torch.equal(a.train, ds.train)  # train stays grayscale: binarized per batch
    assert set(torch.unique(a.valid).tolist()) <= {0.0, 1.0} and torch.equal(a.valid, b.valid)  # once, fixed seed
    assert torch.equal(a.test, b.test)


# ---- downloads through a local mirror ------------------------------------------------------------------------------

def test_download_every_new_format_from_a_mirror(caltech_files, omniglot_file, frey_images, server, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    from vae_core.data.inventory import fetch_missing

    base, root = server
    caltech_files(root)
    omniglot_file[0](root)
    (root / "freyfaces").mkdir()
    scipy.io.savemat(root / "freyfaces/frey_rawface.mat", {"ff": frey_images.T})
    monkeypatch.setenv("VAEBENCH_MIRROR", base.rstrip("/"))
    monkeypatch.setenv("VAEBENCH_DOWNLOAD_TIMEOUT", "5")
    for env in (sources.ENV_BINARIZED_MIRRORS, sources.ENV_MNIST_MIRRORS):  # no test reaches the internet
        monkeypatch.setenv(env, "http://127.0.0.1:9/")
    monkeypatch.setattr(sources, "FASHION_MIRRORS", ("http://127.0.0.1:9/",))
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("caltech101-silhouettes", "frey-faces", "omniglot"):
        with pytest.raises(MissingDataError):
            load_dataset(name, empty)
    failures = fetch_missing(empty)  # binarized MNIST and the IDX sets fail here (no mirror copy): listed
    assert all(isinstance(f, DataError) for f in failures)
    for name, rel in (("caltech101-silhouettes", "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat"),
                      ("frey-faces", "freyfaces/frey_rawface.mat"), ("omniglot", "omniglot/chardata.mat")):
        assert (isolated / rel).is_file()
        assert load_dataset(name, empty).source == str((isolated / rel).parent)  # now served from the cache
    assert not list(isolated.rglob(".part-*"))


def test_corrupt_download_leaves_nothing(caltech_files, server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         isolated: Path) -> None:
    base, root = server
    path = caltech_files(root)
    path.write_bytes(path.read_bytes() + b"junk")  # the mirror's copy no longer has the pinned md5
    monkeypatch.setenv("VAEBENCH_MIRROR", base.rstrip("/"))
    monkeypatch.setattr(caltech, "FILE", files.RemoteFile(caltech.FILE.subdir, caltech.FILE.filename, (),
                                                          caltech.FILE.digest))
    with pytest.raises(DownloadError) as err:
        load_dataset("caltech101-silhouettes", tmp_path, download=True)
    assert "md5 mismatch" in one_line(err)
    assert not [p for p in isolated.rglob("*") if p.is_file()]


# ---- through the CLI: one line, exit 2, nothing written ------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["caltech101-silhouettes", "frey-faces"])
def test_run_on_bad_data_is_exit_2_and_writes_nothing(caltech_files, frey_images, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, dataset: str) -> None:
    from tests.test_download import TINY_GRID, _cli

    data = tmp_path / "data"
    if dataset == "frey-faces":
        target = tmp_path / "pwned"
        write_pickle(data / "freyfaces/freyfaces.pkl", [frey_images, Writes(target, "system")], monkeypatch)
    else:
        path = caltech_files(data)
        path.write_bytes(path.read_bytes()[:200])
        monkeypatch.setattr(caltech, "FILE", files.RemoteFile(caltech.FILE.subdir, caltech.FILE.filename, (), ""))
    grid = tmp_path / "g.toml"
    likelihood = "discretized-logistic" if dataset == "frey-faces" else "bernoulli"
    grid.write_text(TINY_GRID.replace("[model]\n", f'[model]\nlikelihood = "{likelihood}"\n')
                    + f'[data]\ndataset = "{dataset}"\n')
    results = tmp_path / "results"
    res = _cli("run", "--grid", str(grid), "--results", str(results), "--data-dir", str(data), "--offline")
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and str(data) in " ".join(res.output.split())
    assert not results.exists() and not (tmp_path / "pwned").exists()
