"""Reading numpy arrays from pickles without running the pickle's code.

A pickle can name any importable callable and have it called while loading. `load_arrays` allows exactly the
globals numpy uses to rebuild an ndarray (its reconstruct function, `ndarray`, `dtype`; and `_codecs.encode` with
the latin1 codec only, through which Python 3 writes an array's bytes at protocols 0-2), resolved here to the
objects themselves; any other global is refused before it is imported, so its code never runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from vae_core.data.errors import CorruptDataError

_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]  # numpy's ndarray rebuild function, wherever numpy keeps it


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol 0-2 pickles use it for bytes: latin1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside ALLOWED."""


class ArrayUnpickler(pickle.Unpickler):
    """An Unpickler whose globals are only those in ALLOWED (no import happens: the objects are looked up)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_arrays(path: Path, where: str | None = None) -> Any:
    """The object pickled in `path` (Python 2 pickles read with encoding latin1), built from numpy arrays and
    plain containers only; CorruptDataError naming the file for a refused global or a broken pickle."""
    where = where or str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorruptDataError(f"{where}: cannot be read ({err})") from err
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as err:
        raise CorruptDataError(f"{where}: pickle refers to {err}, which is not allowed (only numpy array "
                               f"reconstruction is); it was not loaded and none of its code ran") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, MemoryError, OverflowError) as err:
        raise CorruptDataError(f"{where}: not a readable pickle of numpy arrays ({type(err).__name__}: {err}); "
                               f"delete it and fetch it again") from None
