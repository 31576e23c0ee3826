"""Where datasets are looked for: explicit folder, then $VAEBENCH_DATA, then the cache folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vae_core.data.errors import MissingDataError

ENV_DATA = "VAEBENCH_DATA"
ENV_CACHE = "VAEBENCH_CACHE"


def cache_dir() -> Path:
    """The writable cache: $VAEBENCH_CACHE, else ~/.cache/vaebench (downloads and decoded copies go here)."""
    env = os.environ.get(ENV_CACHE, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vaebench"


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Folders to search, in order: `data_dir`, each entry of $VAEBENCH_DATA (os.pathsep-separated), the cache."""
    found: list[Path] = []
    if data_dir is not None and str(data_dir) != "":
        found.append(Path(data_dir).expanduser())
    for entry in os.environ.get(ENV_DATA, "").split(os.pathsep):
        if entry.strip():
            found.append(Path(entry.strip()).expanduser())
    found.append(cache_dir())
    unique: list[Path] = []
    seen: set[Path] = set()
    for folder in found:
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(folder)
    return unique


def find_file(candidates: Sequence[str], dirs: Sequence[Path]) -> Path | None:
    """First existing `dir / candidate`, folders outermost (so an earlier folder always wins)."""
    for folder in dirs:
        for rel in candidates:
            path = folder / rel
            if path.is_file():
                return path
    return None


def describe_dirs(dirs: Sequence[Path]) -> str:
    """The searched folders for a message, marking the ones that do not exist."""
    return ", ".join(str(d) if d.is_dir() else f"{d} (does not exist)" for d in dirs)


def missing_error(display: str, layout: str, dirs: Sequence[Path]) -> MissingDataError:
    """The one-line error for a file found in none of `dirs`."""
    return MissingDataError(
        f"{display} not found; searched (as {layout}): {describe_dirs(dirs)}; "
        f"fix: run `vaebench data --download` (needs internet), or pass --data-dir / set {ENV_DATA} "
        f"to a folder that holds it")
