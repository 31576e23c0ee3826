"""Fetching a file from a list of mirrors into the cache: temp file, verify, then atomic move.

Uses urllib only, with timeouts; shows a rich progress bar on stderr. A file that fails verification never
reaches its destination, and the temp file is always removed.
"""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from vae_core.data.errors import DataError, DownloadError
from vae_core.data.sources import download_timeout

_CHUNK = 1 << 16


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=Console(stderr=True), transient=False)


def _copy(url: str, out, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "vaebench"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with _progress() as progress:
            task = progress.add_task(f"download {url.rsplit('/', 1)[-1]}", total=total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                progress.advance(task, len(chunk))


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(err) or type(err).__name__


def fetch(urls: Sequence[str], dest: Path, verify: Callable[[Path, str], None]) -> Path:
    """Download the first of `urls` that works and passes `verify(temp_path, url)`, then move it to `dest`.

    The temp file sits beside `dest` (same filesystem, so the move is atomic) and keeps its suffix (e.g. `.gz`).

    `verify` raises DataError for a corrupt payload; the next mirror is then tried. If none succeeds, raises
    DownloadError listing every URL and why it failed.
    """
    failures: list[str] = []
    for url in urls:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-", suffix=f"-{dest.name}")
        except OSError as err:
            raise DownloadError(f"cannot write the download of {dest.name} into {dest.parent} ({err}); "
                                f"fix: set VAEBENCH_CACHE to a writable folder") from err
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy(url, out, download_timeout())
            verify(tmp, url)
            tmp.chmod(0o644)
            os.replace(tmp, dest)
            return dest
        except DataError as err:
            failures.append(f"{url} (corrupt download: {err})")
        except (urllib.error.URLError, OSError, ValueError) as err:
            failures.append(f"{url} ({_reason(err)})")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"could not download {dest.name}; tried: {'; '.join(failures)}; "
                        f"fix: check the internet connection or set VAEBENCH_MIRROR to a mirror, place the file in "
                        f"{dest.parent} yourself, or point --data-dir / VAEBENCH_DATA at a folder that holds it")
