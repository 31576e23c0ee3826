"""Where datasets are looked for: explicit folder, then $VAEBENCH_DATA, then the cache folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vae_core.data.errors import DataError, MissingDataError

ENV_DATA = "VAEBENCH_DATA"
ENV_CACHE = "VAEBENCH_CACHE"
ENV_OFFLINE = "VAEBENCH_OFFLINE"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def cache_dir() -> Path:
    """The writable cache: $VAEBENCH_CACHE, else ~/.cache/vaebench (downloads and decoded copies go here)."""
    env = os.environ.get(ENV_CACHE, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vaebench"


def offline_from_env() -> bool:
    """Whether $VAEBENCH_OFFLINE forbids downloads (1/true/yes/on; unset, 0/false/no/off allow them)."""
    value = os.environ.get(ENV_OFFLINE, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DataError(f"{ENV_OFFLINE}={os.environ[ENV_OFFLINE]!r} is not understood; set it to 1 (no downloads) "
                    f"or 0 (downloads allowed)")


def check_data_dir(data_dir: str | Path | None) -> None:
    """An explicit data folder must exist: a typo must not silently select other data. MissingDataError if not."""
    if data_dir is None or str(data_dir) == "":
        return
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise MissingDataError(f"data folder {folder} (--data-dir) {what}; fix: correct the path, or leave "
                               f"--data-dir out to search ${ENV_DATA} and the cache")


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Folders to search, in order: `data_dir`, each entry of $VAEBENCH_DATA (os.pathsep-separated), the cache.

    An explicit `data_dir` that is not a folder raises MissingDataError (`check_data_dir`)."""
    check_data_dir(data_dir)
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
