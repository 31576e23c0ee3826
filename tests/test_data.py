"""Data layer: real binarized and grayscale MNIST, strict readers, checksums, search order, decoded cache."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_core.data import (DATASETS, ChecksumError, CorruptDataError, DataError, MissingDataError, binarize,
                           data_dirs, load_dataset, load_mnist_test)
from vae_core.data import binarized, cache, formats, mnist, sources

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
README_DIGESTS = {
    "train": "727146c35424b019f3e350e1e69faa05644a0abaf787e3f4e1a9632220a13906",
    "valid": "a256ac44ae26be720fad8616a05ed6ecfd1619930d9a208379bb2a4405df5b6d",
    "test": "9fcd8da6f0fdf09b2ba30fe63a0bb784042a0de82563172530229b983e294ff2",
}
TORCHVISION_MD5 = {
    "train-images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels": "ec29112dd5afa0611ce80d1b7f02629c",
}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def parse_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the `.amat` text parser (a decoded-cache hit makes none)."""
    calls = [0]
    real = formats.parse_amat

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(formats, "parse_amat", counting)
    return calls


# ---- real binarized MNIST -------------------------------------------------------------------------------------

def test_registry_matches_published_digests() -> None:
    assert {s: spec.sha256 for s, spec in sources.BINARIZED_SPLITS.items()} == README_DIGESTS
    assert {k: spec.md5_gz for k, spec in sources.IDX_FILES.items()} == TORCHVISION_MD5
    assert tuple(DATASETS) == ("binarized-mnist", "mnist-dynamic", "caltech101-silhouettes", "fashion-mnist",
                               "frey-faces", "omniglot")


def test_binarized_shapes_dtypes_values(binarized_mnist) -> None:
    ds = binarized_mnist
    assert ds.name == "binarized-mnist" and ds.dynamic is False
    for split, rows in (("train", 50000), ("valid", 10000), ("test", 10000)):
        x = getattr(ds, split)
        assert x.shape == (rows, 784) and x.dtype == torch.float32
        assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    assert re.fullmatch(r"[0-9a-f]{16}", ds.digest)
    assert "binarized_mnist" in ds.source


def test_binarized_pixel_means(binarized_mnist) -> None:
    means = [round(getattr(binarized_mnist, s).double().mean().item(), 4) for s in ("train", "valid", "test")]
    assert means == [0.1306, 0.1311, 0.1325]


def test_binarized_content_matches_readme_digests(binarized_mnist) -> None:
    for split, digest in README_DIGESTS.items():
        x = getattr(binarized_mnist, split).to(torch.uint8).numpy()
        assert formats.packed_sha256(x) == digest


def test_binarized_test_labels_counts_and_sorted(binarized_mnist) -> None:
    labels = binarized_mnist.test_labels
    assert labels is not None and labels.dtype == torch.int64 and labels.shape == (10000,)
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert bool(torch.all(labels[1:] >= labels[:-1]))
    assert labels[0] == 0 and labels[-1] == 9


def test_second_load_hits_decoded_cache(shared_data_dir: Path, binarized_mnist, session_cache: Path,
                                        parse_count: list[int]) -> None:
    again = load_dataset("binarized-mnist", shared_data_dir)
    assert parse_count[0] == 0
    assert len(list((session_cache / cache.DECODED_SUBDIR).glob("binarized_mnist_*.npy"))) == 3
    assert torch.equal(again.train, binarized_mnist.train) and torch.equal(again.test, binarized_mnist.test)
    assert again.digest == binarized_mnist.digest


def test_flipped_bit_in_real_split_is_rejected(shared_data_dir: Path, tmp_path: Path) -> None:
    text = bytearray(gzip.decompress((shared_data_dir / "binarized_mnist/binarized_mnist_valid.amat.gz").read_bytes()))
    pos = 5 * 1568 + 2 * 300
    text[pos] = ord("1") if text[pos] == ord("0") else ord("0")
    (tmp_path / "binarized_mnist_valid.amat").write_bytes(bytes(text))
    with pytest.raises(ChecksumError) as err:
        binarized.load_split("valid", [tmp_path])
    message = one_line(err)
    assert "binarized_mnist_valid.amat" in message and README_DIGESTS["valid"] in message
    assert re.search(r"got [0-9a-f]{64}", message)


# ---- real grayscale MNIST and dynamic binarization ---------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_test(shared_data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist_test(shared_data_dir)


def test_grayscale_test_set(mnist_test) -> None:
    images, labels = mnist_test
    assert images.shape == (10000, 28, 28) and images.dtype == torch.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert round(images.double().mean().item(), 4) == 0.1325
    assert not set(torch.unique(images).tolist()) <= {0.0, 1.0}
    assert labels.dtype == torch.int64 and labels.shape == (10000,)
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_dynamic_binarization_on_grayscale(mnist_test) -> None:
    x = mnist_test[0].reshape(-1, 784)
    g = torch.Generator().manual_seed(0)
    first, second = binarize(x, g), binarize(x, g)
    for b in (first, second):
        assert b.shape == x.shape and b.dtype == x.dtype and b.device == x.device
        assert set(torch.unique(b).tolist()) == {0.0, 1.0}
        assert abs(b.double().mean().item() - x.double().mean().item()) < 1e-3
        assert torch.all(b[x == 0] == 0) and torch.all(b[x == 1] == 1)
    changed = (first != second).double().mean().item()
    assert 0.01 < changed < 0.2
    assert torch.equal(binarize(x, torch.Generator().manual_seed(0)), first)
    with pytest.raises(TypeError):
        binarize(torch.zeros(3, dtype=torch.uint8))


def test_mnist_dynamic_offline_names_train_images(shared_data_dir: Path, isolated: Path) -> None:
    with pytest.raises(MissingDataError) as err:
        load_dataset("mnist-dynamic", shared_data_dir)
    message = one_line(err)
    assert "train-images-idx3-ubyte(.gz)" in message
    assert str(shared_data_dir) in message and str(isolated) in message
    assert "vaebench data --download" in message and "--data-dir" in message and "VAEBENCH_DATA" in message


def test_show_data_on_real_files(shared_data_dir: Path, binarized_mnist, capsys: pytest.CaptureFixture) -> None:
    from bench.commands.data import show_data

    assert show_data(shared_data_dir, download=False) == 0
    out = capsys.readouterr().out
    for text in ("50000x784", "10000x784", "0.1306", "0.1311", "0.1325", "10000x28x28", "train-images-idx3-ubyte"):
        assert text in out
    assert "mnist-dynamic: unavailable" in out or "mnist-dynamic: available" in out


# ---- readers -----------------------------------------------------------------------------------------------------

def test_amat_and_amat_gz_identical(synth, tmp_path: Path) -> None:
    x = synth.bits(7)
    plain = synth.write_amat(tmp_path / "a.amat", x)
    packed = synth.write_amat(tmp_path / "a.amat.gz", x)
    assert np.array_equal(formats.read_amat(plain), x) and np.array_equal(formats.read_amat(packed), x)
    loose = synth.amat_text(x).replace(b"\n", b" \r\n").replace(b" 1", b"\t1") + b"\n\n"
    (tmp_path / "loose.amat").write_bytes(loose)
    assert np.array_equal(formats.read_amat(tmp_path / "loose.amat"), x)


@pytest.mark.parametrize("mangle, pattern", [
    (lambda t: t[: len(t) // 2], r"line 4 has \d+ values, expected 784"),
    (lambda t: t.replace(b"0 1", b"0 2", 1), r"value '2'; expected only 0/1"),
    (lambda t: t.replace(b"0 0", b"0.0", 1), r"value '0.0'"),
    (lambda t: t.replace(b"1 0", b"10", 1), r"multi-digit value"),
    (lambda t: t.replace(b"\n", b" 0\n", 1), r"line 1 has 785 values"),
])
def test_garbled_amat_is_rejected(synth, tmp_path: Path, mangle, pattern: str) -> None:
    path = tmp_path / "bad.amat"
    path.write_bytes(mangle(synth.amat_text(synth.bits(7))))
    with pytest.raises(CorruptDataError) as err:
        formats.read_amat(path)
    assert str(path) in one_line(err) and re.search(pattern, str(err.value))


def test_truncated_gzip_is_rejected(synth, tmp_path: Path) -> None:
    path = synth.write_amat(tmp_path / "cut.amat.gz", synth.bits(50))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptDataError) as err:
        formats.read_amat(path)
    assert str(path) in one_line(err)


def test_missing_rows_are_rejected(synth, tmp_path: Path) -> None:
    splits = synth.binarized_set(tmp_path)
    synth.write_amat(tmp_path / "binarized_mnist/binarized_mnist_valid.amat.gz", splits["valid"][:-1])
    with pytest.raises(CorruptDataError) as err:
        binarized.load_split("valid", [tmp_path])
    assert re.search(r"binarized_mnist_valid\.amat\.gz: 5 rows, expected 6", one_line(err))


def test_idx_roundtrip_gz_and_raw(synth, tmp_path: Path) -> None:
    x = synth.pixels(4, 28, 28)
    assert np.array_equal(formats.read_idx(synth.write_idx(tmp_path / "i-ubyte", x)), x)
    assert np.array_equal(formats.read_idx(synth.write_idx(tmp_path / "i-ubyte.gz", x)), x)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert np.array_equal(formats.read_idx(synth.write_idx(tmp_path / "l-ubyte", labels)), labels)


@pytest.mark.parametrize("mangle, pattern", [
    (lambda d: d[:-1], r"payload is 3135 bytes, expected 3136"),
    (lambda d: d + b"\0", r"payload is 3137 bytes"),
    (lambda d: b"\x00\x01" + d[2:], r"bad IDX magic 00010803"),
    (lambda d: d[:9], r"header cut short"),
    (lambda d: b"", r"bad IDX magic \(empty\)"),
])
def test_garbled_idx_is_rejected(synth, tmp_path: Path, mangle, pattern: str) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(mangle(synth.idx_bytes(synth.pixels(4, 28, 28))))
    with pytest.raises(CorruptDataError) as err:
        formats.read_idx(path)
    assert str(path) in one_line(err) and re.search(pattern, str(err.value))


def test_idx_wrong_shape_is_rejected(synth, tmp_path: Path) -> None:
    synth.write_idx(tmp_path / "MNIST/raw/t10k-images-idx3-ubyte.gz", synth.pixels(4, 28, 28))
    with pytest.raises(CorruptDataError) as err:
        mnist.load_idx("t10k-images", [tmp_path])
    assert re.search(r"t10k-images-idx3-ubyte\.gz: IDX shape 4x28x28, expected 10000x28x28", one_line(err))


def test_idx_md5_mismatch_is_rejected(synth, tmp_path: Path) -> None:
    x = np.tile(np.arange(10, dtype=np.uint8), 1000)
    synth.write_idx(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz", x)
    with pytest.raises(ChecksumError) as err:
        mnist.load_idx("t10k-labels", [tmp_path])
    message = one_line(err)
    assert "t10k-labels-idx1-ubyte.gz" in message and TORCHVISION_MD5["t10k-labels"] in message
    assert re.search(r"got [0-9a-f]{32}", message)


def test_binarized_checksum_mismatch_is_rejected(synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synth.binarized_set(tmp_path)
    spec = sources.BINARIZED_SPLITS["test"]
    monkeypatch.setitem(sources.BINARIZED_SPLITS, "test", sources.AmatSpec("test", spec.filename, spec.rows,
                                                                           spec.cols, "ab" * 32))
    with pytest.raises(ChecksumError) as err:
        binarized.load_split("test", [tmp_path])
    assert f"expected {'ab' * 32}, got {spec.sha256}" in one_line(err)


def test_garbled_labels_file_is_rejected(synth, tmp_path: Path) -> None:
    path = tmp_path / "binarized_mnist_test_labels.txt"
    path.write_text("0\n1\n12\n")
    with pytest.raises(CorruptDataError):
        binarized.load_test_labels([tmp_path])
    path.write_text("0\n1\n2\n")
    with pytest.raises(CorruptDataError, match="3 labels, expected 10000"):
        binarized.load_test_labels([tmp_path])


# ---- search order and layouts --------------------------------------------------------------------------------------

def test_data_dirs_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingDataError, match=re.escape(f"data folder {tmp_path / 'explicit'} (--data-dir) does not "
                                                         "exist")):
        data_dirs(tmp_path / "explicit")  # a typo must not fall through to the other folders
    (tmp_path / "explicit").mkdir()
    assert data_dirs(tmp_path / "explicit") == [tmp_path / "explicit", tmp_path / "env", tmp_path / "cache"]
    assert data_dirs() == [tmp_path / "env", tmp_path / "cache"]  # $VAEBENCH_DATA need not exist
    (tmp_path / "env").mkdir()
    assert data_dirs(tmp_path / "env") == [tmp_path / "env", tmp_path / "cache"]
    monkeypatch.delenv("VAEBENCH_CACHE")
    assert data_dirs()[-1] == Path.home() / ".cache" / "vaebench"


def test_missing_files_list_searched_folders(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    monkeypatch.setenv("VAEBENCH_DATA", str(env))
    with pytest.raises(MissingDataError) as err:
        load_dataset("binarized-mnist", explicit)
    message = one_line(err)
    assert "binarized_mnist_train.amat(.gz) not found" in message
    assert message.index(str(explicit)) < message.index(str(env)) < message.index(str(isolated))
    assert f"{env} (does not exist)" in message and "vaebench data --download" in message


@pytest.mark.parametrize("gz, subdir", [(True, True), (False, True), (True, False), (False, False)])
def test_binarized_layouts(synth, tmp_path: Path, isolated: Path, gz: bool, subdir: bool) -> None:
    splits = synth.binarized_set(tmp_path / "data", gz=gz, subdir=subdir)
    ds = load_dataset("binarized-mnist", tmp_path / "data")
    for split, x in splits.items():
        assert torch.equal(getattr(ds, split), torch.from_numpy(x).float())
    assert ds.test_labels is None and ds.dynamic is False
    assert ds.source == str(tmp_path / "data" / ("binarized_mnist" if subdir else ""))


def test_explicit_folder_wins_over_env(synth, tmp_path: Path, isolated: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    splits = synth.binarized_set(tmp_path / "explicit")
    synth.write_amat(tmp_path / "env/binarized_mnist/binarized_mnist_train.amat", 1 - splits["train"])
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "env"))
    assert torch.equal(load_dataset("binarized-mnist", tmp_path / "explicit").train,
                       torch.from_numpy(splits["train"]).float())
    with pytest.raises(ChecksumError, match=re.escape(str(tmp_path / "env"))):
        load_dataset("binarized-mnist")


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


# ---- decoded cache ----------------------------------------------------------------------------------------------

def test_cache_written_outside_data_dir_and_reused(synth, tmp_path: Path, isolated: Path,
                                                   parse_count: list[int]) -> None:
    data = tmp_path / "data"
    splits = synth.binarized_set(data)
    before = sorted(p.name for p in data.rglob("*"))
    first = load_dataset("binarized-mnist", data)
    assert parse_count[0] == 3
    assert sorted(p.name for p in data.rglob("*")) == before
    cached = sorted((isolated / cache.DECODED_SUBDIR).glob("*.npy"))
    assert len(cached) == 3 and not list((isolated / cache.DECODED_SUBDIR).glob("*.tmp"))
    second = load_dataset("binarized-mnist", data)
    assert parse_count[0] == 3
    assert torch.equal(first.train, second.train)
    assert torch.equal(second.valid, torch.from_numpy(splits["valid"]).float())


def test_unwritable_cache_only_warns(synth, tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = synth.binarized_set(tmp_path / "data")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("VAEBENCH_CACHE", str(blocker))
    with pytest.warns(RuntimeWarning, match="could not write the data cache"):
        ds = load_dataset("binarized-mnist", tmp_path / "data")
    assert torch.equal(ds.test, torch.from_numpy(splits["test"]).float())


@pytest.mark.parametrize("damage", ["garbage", "flipped", "truncated"])
def test_corrupt_cache_is_rebuilt(synth, tmp_path: Path, isolated: Path, parse_count: list[int], damage: str) -> None:
    data = tmp_path / "data"
    splits = synth.binarized_set(data)
    load_dataset("binarized-mnist", data)
    (path,) = (isolated / cache.DECODED_SUBDIR).glob("binarized_mnist_train-*.npy")
    if damage == "garbage":
        path.write_bytes(b"not a numpy file")
    elif damage == "flipped":
        packed = np.load(path)
        packed[0] ^= 0x80
        np.save(path, packed)
    else:
        path.write_bytes(path.read_bytes()[:-3])
    parse_count[0] = 0
    ds = load_dataset("binarized-mnist", data)
    assert parse_count[0] == 1
    assert torch.equal(ds.train, torch.from_numpy(splits["train"]).float())
    spec = sources.BINARIZED_SPLITS["train"]
    assert cache.load_packed(path, spec.rows, spec.cols, spec.sha256) is not None


def test_changed_source_file_is_not_served_from_cache(synth, tmp_path: Path, isolated: Path) -> None:
    data = tmp_path / "data"
    splits = synth.binarized_set(data)
    load_dataset("binarized-mnist", data)
    synth.write_amat(data / "binarized_mnist/binarized_mnist_train.amat.gz", 1 - splits["train"])
    with pytest.raises(ChecksumError):
        load_dataset("binarized-mnist", data)


# ---- mnist-dynamic (synthetic) -------------------------------------------------------------------------------------

def test_mnist_dynamic_split_and_values(synth, tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "data/MNIST/raw"
    train, test = synth.pixels(30, 28, 28), synth.pixels(8, 28, 28)
    labels = np.arange(8, dtype=np.uint8)
    synth.patch_idx("train-images", train, synth.write_idx(raw / "train-images-idx3-ubyte.gz", train))
    synth.patch_idx("t10k-images", test, synth.write_idx(raw / "t10k-images-idx3-ubyte.gz", test))
    synth.patch_idx("t10k-labels", labels, synth.write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels))
    monkeypatch.setattr(sources, "MNIST_VALID_SIZE", 10)
    ds = load_dataset("mnist-dynamic", tmp_path / "data")
    flat = torch.from_numpy(train).reshape(30, 784).float() / 255
    assert ds.dynamic is True and ds.name == "mnist-dynamic" and ds.train.dtype == torch.float32
    assert torch.equal(ds.train, flat[:20]) and torch.equal(ds.valid, flat[20:])
    assert torch.equal(ds.test, torch.from_numpy(test).reshape(8, 784).float() / 255)
    assert ds.test_labels.tolist() == list(range(8)) and ds.test_labels.dtype == torch.int64
    assert 0 <= ds.train.min() and ds.train.max() <= 1 and re.fullmatch(r"[0-9a-f]{16}", ds.digest)
    b = binarize(ds.train, torch.Generator().manual_seed(1))
    assert set(torch.unique(b).tolist()) <= {0.0, 1.0}


def test_uncompressed_idx_checked_by_sha256(synth, tmp_path: Path) -> None:
    x = synth.pixels(3, 28, 28)
    synth.patch_idx("t10k-images", x)
    synth.write_idx(tmp_path / "t10k-images-idx3-ubyte", x)
    assert mnist.load_idx("t10k-images", [tmp_path]).check == "sha256"
    synth.write_idx(tmp_path / "t10k-images-idx3-ubyte", 255 - x)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        mnist.load_idx("t10k-images", [tmp_path])
