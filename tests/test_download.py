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
import pandas as pd
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
    from bench.commands.data import show_data

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


# ---- data on first use: `vaebench run` / `report` download what is missing unless offline -----------------------
TINY_GRID = """
name = "first"
[model]
hidden = [8]
latent_dim = 2
[train]
batch_size = 4
max_steps = 2
eval_every = 2
check_every = 1
compile = false
[eval]
iw_samples = 2
valid_iw_samples = 1
"""


def _cli(*args: str):
    from typer.testing import CliRunner

    from bench.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture
def first_use(synth, server, offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A mirror laid out like a data folder serving a synthetic binarized set; the canonical URL replaced by a
    dead one (no test reaches the internet); downloads allowed. Returns (grid, results, empty data folder)."""
    base, root = server
    serve_binarized(synth, root / "binarized_mnist")
    monkeypatch.setenv(sources.ENV_MIRROR, base.rstrip("/"))
    monkeypatch.setenv(sources.ENV_BINARIZED_MIRRORS, "http://127.0.0.1:9/")
    monkeypatch.delenv("VAEBENCH_OFFLINE")
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID)
    return grid, tmp_path / "results", offline


def test_mirror_setting_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.ENV_BINARIZED_MIRRORS, raising=False)
    monkeypatch.delenv(sources.ENV_MNIST_MIRRORS, raising=False)
    monkeypatch.setenv(sources.ENV_MIRROR, "http://mirror.example/data/")
    assert sources.binarized_mirrors() == ["http://mirror.example/data/binarized_mnist/",
                                           *sources.BINARIZED_MNIST_MIRRORS]
    assert sources.mnist_mirrors() == ["http://mirror.example/data/MNIST/raw/", *sources.MNIST_MIRRORS]


def test_run_downloads_missing_data_then_trains(first_use, isolated: Path) -> None:
    grid, results, empty = first_use
    res = _cli("run", "--grid", str(grid), "--results", str(results), "--data-dir", str(empty))
    assert res.exit_code == 0, res.output
    assert files_under(isolated / "binarized_mnist") == [f"binarized_mnist_{s}.amat" for s in ("test", "train", "valid")]
    runs = pd.read_parquet(results / "runs")
    assert list(runs["status"]) == ["completed"]
    assert f"results: {results}/runs" in res.output and f"vaebench report --results {results}" in res.output


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_forbids_the_download(first_use, isolated: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    grid, results, empty = first_use
    args = ["run", "--grid", str(grid), "--results", str(results), "--data-dir", str(empty)]
    if how == "flag":
        args.append("--offline")
    else:
        monkeypatch.setenv("VAEBENCH_OFFLINE", "1")
    res = _cli(*args)
    assert res.exit_code == 2
    message = " ".join(res.output.split())
    assert "binarized_mnist_train.amat(.gz) not found" in message and "VAEBENCH_OFFLINE=1 forbids" in message
    assert files_under(isolated) == [] and not results.exists()


def test_run_without_network_is_one_line_exit_2(first_use, isolated: Path, closed_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    grid, results, empty = first_use
    monkeypatch.setenv(sources.ENV_MIRROR, closed_url)
    res = _cli("run", "--grid", str(grid), "--results", str(results), "--data-dir", str(empty))
    assert res.exit_code == 2
    message = " ".join(res.output.split())
    assert "could not download binarized_mnist_train.amat" in message and "VAEBENCH_MIRROR" in message
    assert files_under(isolated) == [] and not results.exists()


def test_bad_offline_value_is_exit_2(first_use, monkeypatch: pytest.MonkeyPatch) -> None:
    grid, results, empty = first_use
    monkeypatch.setenv("VAEBENCH_OFFLINE", "maybe")
    res = _cli("run", "--grid", str(grid), "--results", str(results), "--data-dir", str(empty))
    assert res.exit_code == 2 and "VAEBENCH_OFFLINE='maybe' is not understood" in res.output


def test_report_downloads_the_test_set_for_its_images(first_use, isolated: Path, tmp_path: Path) -> None:
    from tests.test_report import _two_d_results

    _, _, empty = first_use
    root = _two_d_results(tmp_path)
    offline_run = _cli("report", "--results", str(root), "--out", str(tmp_path / "o1"), "--data-dir", str(empty),
                       "--offline")
    assert offline_run.exit_code == 0, offline_run.output
    assert not (tmp_path / "o1" / "reconstructions_z2.png").exists() and files_under(isolated) == []
    res = _cli("report", "--results", str(root), "--out", str(tmp_path / "o2"), "--data-dir", str(empty))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o2" / "reconstructions_z2.png").is_file()
    assert "binarized_mnist/binarized_mnist_test.amat" in files_under(isolated)


@pytest.mark.parametrize("command", [["run", "--grid", "configs/tiny.toml"], ["report"], ["data"]])
def test_missing_data_dir_is_exit_2_naming_it(command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_report import grid_rows, write_results

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    results = write_results(tmp_path / "results", grid_rows(), curves=False)
    before = files_under(tmp_path)
    missing = tmp_path / "no" / "such" / "dir"
    res = _cli(*command, "--results", str(results), "--data-dir", str(missing)) if command != ["data"] else \
        _cli("data", "--data-dir", str(missing))
    assert res.exit_code == 2
    assert f"data folder {missing} (--data-dir) does not exist" in " ".join(res.output.split())
    assert len(res.output.strip().splitlines()) == 1 and files_under(tmp_path) == before
