"""Downloads against a local HTTP server: success into the cache, mirror fallback, corrupt and unreachable."""

from __future__ import annotations

import functools
import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_core.data import (ChecksumError, CorruptDataError, DownloadError, MissingDataError, load_dataset,
                           load_mnist_test)
from vae_core.data import cache, formats, sources


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 (ephemeral port) serving the folder it returns."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def offline(isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder and a fresh cache; returns the empty data folder."""
    monkeypatch.setenv("VAEBENCH_DOWNLOAD_TIMEOUT", "5")
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def serve_binarized(synth, root: Path) -> dict[str, np.ndarray]:
    splits = {s: synth.bits(n) for s, n in (("train", 12), ("valid", 4), ("test", 3))}
    for split, x in splits.items():
        synth.write_amat(root / f"binarized_mnist_{split}.amat", x)
    synth.patch_binarized(splits)
    return splits


def test_default_mirrors_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.ENV_BINARIZED_MIRRORS, raising=False)
    monkeypatch.delenv(sources.ENV_MNIST_MIRRORS, raising=False)
    assert sources.binarized_mirrors() == ["http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"]
    assert sources.mnist_mirrors() == ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                                       "http://yann.lecun.com/exdb/mnist/"]
    monkeypatch.setenv(sources.ENV_MNIST_MIRRORS, "http://a/x, http://b/")
    assert sources.mnist_mirrors() == ["http://a/x/", "http://b/"]


def test_download_binarized_into_cache(synth, server, offline: Path, isolated: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    splits = serve_binarized(synth, root)
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, base)
    with pytest.raises(MissingDataError):
        load_dataset("binarized-mnist", offline)
    ds = load_dataset("binarized-mnist", offline, download=True)
    for split, x in splits.items():
        assert torch.equal(getattr(ds, split), torch.from_numpy(x).float())
        path = isolated / "binarized_mnist" / f"binarized_mnist_{split}.amat"
        assert formats.packed_sha256(formats.read_amat(path)) == sources.BINARIZED_SPLITS[split].sha256
    assert ds.test_labels is None and ds.source == str(isolated / "binarized_mnist")
    assert not [p for p in files_under(isolated) if ".part" in p]
    assert files_under(offline) == []
    for path in root.iterdir():
        path.unlink()
    calls = [0]
    real = formats.parse_amat
    monkeypatch.setattr(formats, "parse_amat", lambda *a, **k: (calls.__setitem__(0, calls[0] + 1), real(*a, **k))[1])
    again = load_dataset("binarized-mnist", offline)
    assert calls[0] == 0 and torch.equal(again.train, ds.train)


def test_download_idx_falls_back_to_next_mirror(synth, server, offline: Path, isolated: Path, closed_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    images, labels = synth.pixels(5, 28, 28), np.array([1, 2, 3, 4, 5], dtype=np.uint8)
    synth.patch_idx("t10k-images", images, synth.write_idx(root / "t10k-images-idx3-ubyte.gz", images))
    synth.patch_idx("t10k-labels", labels, synth.write_idx(root / "t10k-labels-idx1-ubyte.gz", labels))
    monkeypatch.setattr(sources, "MNIST_MIRRORS", (closed_url, base))
    monkeypatch.delenv(sources.ENV_MNIST_MIRRORS, raising=False)
    x, y = load_mnist_test(offline, download=True)
    assert torch.equal(x, torch.from_numpy(images).float() / 255) and y.tolist() == [1, 2, 3, 4, 5]
    cached = isolated / "MNIST/raw/t10k-images-idx3-ubyte.gz"
    assert hashlib.md5(cached.read_bytes()).hexdigest() == sources.IDX_FILES["t10k-images"].md5_gz
    assert files_under(isolated / "MNIST/raw") == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_corrupt_download_leaves_nothing(synth, server, offline: Path, isolated: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    splits = serve_binarized(synth, root)
    bad = splits["valid"].copy()
    bad[0, 0] ^= 1
    synth.write_amat(root / "binarized_mnist_valid.amat", bad)
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, base)
    with pytest.raises(DownloadError) as err:
        load_dataset("binarized-mnist", offline, download=True)
    message = str(err.value)
    assert "\n" not in message and f"{base}binarized_mnist_valid.amat" in message
    assert f"expected {sources.BINARIZED_SPLITS['valid'].sha256}, got {formats.packed_sha256(bad)}" in message
    assert "binarized_mnist/binarized_mnist_valid.amat" not in files_under(isolated)
    assert not [p for p in files_under(isolated) if "valid" in p or ".part" in p]


def test_corrupt_idx_download_leaves_nothing(synth, server, offline: Path, isolated: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    images = synth.pixels(5, 28, 28)
    synth.patch_idx("t10k-images", images, synth.write_idx(root / "t10k-images-idx3-ubyte.gz", images))
    synth.write_idx(root / "t10k-images-idx3-ubyte.gz", 255 - images)
    monkeypatch.setenv(sources.ENV_MNIST_MIRRORS, base)
    with pytest.raises(DownloadError, match=r"md5 mismatch: expected [0-9a-f]{32}, got [0-9a-f]{32}"):
        load_mnist_test(offline, download=True)
    assert files_under(isolated) == []


def test_unreachable_host(synth, offline: Path, closed_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    synth.patch_binarized({s: synth.bits(2) for s in ("train", "valid", "test")})
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, closed_url)
    with pytest.raises(DownloadError) as err:
        load_dataset("binarized-mnist", offline, download=True)
    message = str(err.value)
    assert "\n" not in message and f"{closed_url}binarized_mnist_train.amat" in message
    assert "could not download binarized_mnist_train.amat" in message and "refused" in message.lower()


def test_http_error_is_reported(server, offline: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = server
    monkeypatch.setenv(sources.ENV_MNIST_MIRRORS, base)
    with pytest.raises(DownloadError, match=r"t10k-images-idx3-ubyte\.gz \(HTTP 404\)"):
        load_mnist_test(offline, download=True)
    assert files_under(isolated) == []


def test_corrupt_file_in_cache_is_downloaded_again(synth, server, offline: Path, isolated: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    splits = serve_binarized(synth, root)
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, base)
    load_dataset("binarized-mnist", offline, download=True)
    synth.write_amat(isolated / "binarized_mnist/binarized_mnist_test.amat", 1 - splits["test"])
    with pytest.raises(ChecksumError):
        load_dataset("binarized-mnist", offline)
    ds = load_dataset("binarized-mnist", offline, download=True)
    assert torch.equal(ds.test, torch.from_numpy(splits["test"]).float())


def test_corrupt_file_outside_cache_is_not_replaced(synth, server, tmp_path: Path, isolated: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    splits = serve_binarized(synth, root)
    data = tmp_path / "data"
    synth.write_amat(data / "binarized_mnist_test.amat", 1 - splits["test"])
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, base)
    with pytest.raises(CorruptDataError, match=str(data)):
        load_dataset("binarized-mnist", data, download=True)
    assert files_under(data) == ["binarized_mnist_test.amat"]


def test_show_data_download(synth, server, offline: Path, isolated: Path, closed_url: str,
                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from bench.data_command import show_data

    base, root = server
    serve_binarized(synth, root)
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, base)
    monkeypatch.setenv(sources.ENV_MNIST_MIRRORS, closed_url)
    assert show_data(offline, download=False) == 2
    assert "hint:" in capsys.readouterr().err
    assert show_data(offline, download=True) == 0
    captured = capsys.readouterr()
    assert "download failed" in captured.err and "train-images-idx3-ubyte.gz" in captured.err
    assert "binarized-mnist: ready" in captured.out
    assert len(list((isolated / cache.DECODED_SUBDIR).glob("*.npy"))) == 3


def test_unwritable_cache_is_a_clear_error(synth, server, offline: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    serve_binarized(synth, root)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("VAEBENCH_CACHE", str(blocker))
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, base)
    with pytest.raises(DownloadError, match="VAEBENCH_CACHE to a writable folder"):
        load_dataset("binarized-mnist", offline, download=True)
