"""Fast decoded copies of parsed datasets, so the 50k-line text files are parsed once per machine.

A copy holds the packed bits of a verified split, named after the split, its content digest and the digest of
the source file's bytes; it is re-verified against the content digest on every read and rebuilt when it fails.
Copies live only under the cache folder, never beside the data, and are written atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from vae_core.data.paths import cache_dir

DECODED_SUBDIR = "decoded"


def decoded_path(stem: str, content_sha256: str, source_sha256: str) -> Path:
    """Where the decoded copy of `stem` read from a source file with digest `source_sha256` lives."""
    return cache_dir() / DECODED_SUBDIR / f"{stem}-{content_sha256[:16]}-{source_sha256[:16]}.npy"


def load_packed(path: Path, rows: int, cols: int, content_sha256: str) -> np.ndarray | None:
    """The (rows, cols) uint8 0/1 array stored at `path`, or None if absent, unreadable or failing its digest."""
    if not path.is_file():
        return None
    try:
        packed = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if packed.dtype != np.uint8 or packed.shape != ((rows * cols + 7) // 8,):
        return None
    if hashlib.sha256(packed.tobytes()).hexdigest() != content_sha256:
        return None
    return np.unpackbits(packed, count=rows * cols).reshape(rows, cols)


def save_packed(path: Path, x: np.ndarray) -> None:
    """Store `x` (0/1 uint8) packed at `path` via a temp file and os.replace; a failure only costs speed."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.packbits(x, axis=None), allow_pickle=False)
        Path(tmp).chmod(0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        warnings.warn(f"could not write the data cache {path}: {err}", RuntimeWarning, stacklevel=2)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
