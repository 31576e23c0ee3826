"""Results folder I/O: atomic writes (temp file + rename) so a kill never leaves a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


class ResultsLayout:
    """Paths inside a results folder (see results/README.md)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run(self, run_id: str) -> Path:
        return self.root / "runs" / f"{run_id}.parquet"

    def curves(self, run_id: str) -> Path:
        return self.root / "curves" / f"{run_id}.parquet"

    def checkpoint(self, run_id: str) -> Path:
        return self.root / "checkpoints" / f"{run_id}.pt"

    def state(self, run_id: str) -> Path:
        return self.root / "state" / f"{run_id}.pt"


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp) on a temp file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_table(folder: Path) -> pd.DataFrame:
    """All `*.parquet` files of a folder as one DataFrame (empty if there are none)."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
