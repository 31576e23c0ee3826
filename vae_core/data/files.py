"""The one way every dataset gets a file: locate it in the searched folders, else download it into the cache
(mirrors first), decode and verify it, and replace a corrupt cached copy when downloads are allowed.

Each dataset module supplies only what differs: the file's name and folder, its canonical URLs, its digest and a
`decode(path, where)` that parses and checks content (raising CorruptDataError / ChecksumError).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vae_core.data import formats, sources
from vae_core.data.download import fetch
from vae_core.data.errors import ChecksumError, CorruptDataError
from vae_core.data.paths import cache_dir, find_file, missing_error

T = TypeVar("T")
FIX = "delete it and run `vaebench data --download`, or point --data-dir / VAEBENCH_DATA at a good copy"
DIGESTS = ("md5", "sha256", "git-blob")


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it sits in a data folder (`subdir/filename`, or `filename` at the top), where it
    is downloaded from, and the digest of its bytes (`algorithm:hex`, algorithm one of DIGESTS; '' when only the
    decoded content is verified)."""

    subdir: str
    filename: str
    urls: tuple[str, ...]
    digest: str = ""

    def __post_init__(self) -> None:
        if self.digest and self.digest.split(":", 1)[0] not in DIGESTS:
            raise ValueError(f"unknown digest algorithm in {self.digest!r}; use one of {DIGESTS}")

    @property
    def candidates(self) -> list[str]:
        return [f"{self.subdir}/{self.filename}", self.filename]

    @property
    def layout(self) -> str:
        return f"{self.subdir}/<file> or <file>"

    def mirror_urls(self) -> list[str]:
        """$VAEBENCH_MIRROR's copy (laid out like a data folder) first, then the canonical URLs."""
        return [base + self.filename for base in sources.mirror_bases(self.subdir)] + list(self.urls)


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content: sha1 of b"blob <size>\\0" + bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of the file's bytes as stored; algorithm one of DIGESTS."""
    if algorithm == "git-blob":
        return git_blob_sha1(path.read_bytes())
    return formats.file_digest(path, algorithm)


def check_digest(path: Path, expected: str, where: str) -> None:
    """ChecksumError naming `where` unless the bytes of `path` have digest `expected` ('algorithm:hex')."""
    if not expected:
        return
    algorithm, hexdigest = expected.split(":", 1)
    try:
        got = file_digest(path, algorithm)
    except OSError as err:
        raise CorruptDataError(f"{where}: cannot be read ({err})") from err
    if got != hexdigest:
        raise ChecksumError(f"{where}: {algorithm} mismatch: expected {hexdigest}, got {got}; {FIX}")


def in_cache(path: Path) -> bool:
    return path.resolve().is_relative_to(cache_dir().resolve())


def obtain(candidates: Sequence[str], dirs: Sequence[Path], download: bool, dest: Path,
           urls: Callable[[], list[str]], decode: Callable[[Path, str], T], display: str,
           layout: str) -> tuple[T, Path]:
    """`decode(path, where)` of the first of `candidates` found in `dirs`, and that path.

    A missing file is downloaded to `dest` (in the cache) from `urls()` when `download`, each payload decoded
    before it is kept; else MissingDataError. A corrupt file in the cache is replaced by a fresh download when
    `download`; a corrupt file elsewhere is never touched (its error is raised).
    """
    def verify(tmp: Path, url: str) -> None:
        decode(tmp, url)

    path = find_file(candidates, dirs)
    if path is None:
        if not download:
            raise missing_error(display, layout, dirs)
        path = fetch(urls(), dest, verify)
    try:
        return decode(path, str(path)), path
    except CorruptDataError:
        if not (download and in_cache(path)):
            raise
        path.unlink(missing_ok=True)
        path = fetch(urls(), dest, verify)
        return decode(path, str(path)), path


def locate(f: RemoteFile, dirs: Sequence[Path]) -> Path | None:
    """Where `f` is found first in `dirs`, or None."""
    return find_file(f.candidates, dirs)


def load_file(f: RemoteFile, dirs: Sequence[Path], download: bool,
              decode: Callable[[Path, str], T]) -> tuple[T, Path]:
    """`obtain` for a RemoteFile: its digest is checked before `decode` runs, on local files and downloads."""
    def checked(path: Path, where: str) -> T:
        if not path.is_file():
            raise CorruptDataError(f"{where}: not a file")
        check_digest(path, f.digest, where)
        return decode(path, where)

    return obtain(f.candidates, dirs, download, cache_dir() / f.subdir / f.filename, f.mirror_urls, checked,
                  f.filename, f.layout)
