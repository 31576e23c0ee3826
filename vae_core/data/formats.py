"""Readers for the on-disk formats: `.amat` text (optionally gzipped), IDX (optionally gzipped), label lists.

Every reader validates structure and raises CorruptDataError naming the file; nothing is loaded half-way.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from vae_core.data.errors import CorruptDataError

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when the name ends in `.gz`; a broken gzip stream is a CorruptDataError."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CorruptDataError(f"{path}: not a valid gzip file ({err}); delete it and fetch it again") from err
    except OSError as err:
        raise CorruptDataError(f"{path}: cannot be read ({err})") from err


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of the file's bytes as stored (e.g. md5 of a `.gz`)."""
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packed_sha256(x: np.ndarray) -> str:
    """sha256 of `numpy.packbits(x, axis=None)`: the content digest of a 0/1 array, independent of formatting."""
    return hashlib.sha256(np.packbits(x, axis=None).tobytes()).hexdigest()


def _line_of(text: bytes, pos: int) -> int:
    return text.count(b"\n", 0, pos) + 1


def parse_amat(text: bytes, cols: int, where: str) -> np.ndarray:
    """Parse `.amat` text of whitespace-separated `0`/`1` tokens, one row a line, into a (rows, cols) uint8 array.

    Blank lines are ignored; any other token, or a line with a number of values other than `cols`, is an error.
    """
    a = np.frombuffer(text, dtype=np.uint8)
    space = (a == 32) | (a == 10) | (a == 13) | (a == 9)
    value = ~space
    chars = a[value]
    bad = np.flatnonzero((chars != 48) & (chars != 49))
    if bad.size:
        pos = int(np.flatnonzero(value)[bad[0]])
        while pos > 0 and text[pos - 1] not in b" \t\r\n":
            pos -= 1
        token = text[pos:pos + 12].split()[0].decode("latin-1")
        raise CorruptDataError(f"{where}: line {_line_of(text, pos)} has value {token!r}; expected only 0/1 values")
    starts = value.copy()
    starts[1:] &= space[:-1]
    if np.count_nonzero(starts) != chars.size:
        pos = int(np.flatnonzero(value[1:] & value[:-1])[0])
        raise CorruptDataError(f"{where}: line {_line_of(text, pos)} has a multi-digit value; "
                               f"expected single 0/1 values separated by spaces")
    rows = 0
    for number, line in enumerate(text.split(b"\n"), start=1):
        n = len(line) - line.count(b" ") - line.count(b"\t") - line.count(b"\r")
        if n == 0:
            continue
        if n != cols:
            raise CorruptDataError(f"{where}: line {number} has {n} values, expected {cols} (truncated or garbled)")
        rows += 1
    return (chars - 48).reshape(rows, cols)


def read_amat(path: Path, cols: int = 784) -> np.ndarray:
    """Read a `.amat` or `.amat.gz` file into a (rows, cols) uint8 array of 0/1."""
    return parse_amat(read_bytes(path), cols, str(path))


def parse_idx(data: bytes, where: str) -> np.ndarray:
    """Parse IDX bytes (magic 0,0,type,ndim; big-endian uint32 dims; payload) into an array, checking every size."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or not 1 <= data[3] <= 4:
        raise CorruptDataError(f"{where}: bad IDX magic {data[:4].hex() or '(empty)'}; not an IDX file")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDataError(f"{where}: IDX header cut short ({len(data)} bytes, needs {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise CorruptDataError(f"{where}: IDX payload is {len(data) - header} bytes, expected {expected} for shape "
                               f"{'x'.join(map(str, shape))} (truncated or garbled)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (`*-ubyte` or `*-ubyte.gz`) into a native-endian array."""
    return parse_idx(read_bytes(path), str(path))


def read_labels(path: Path, classes: int = 10) -> np.ndarray:
    """Read one integer label a line into an int64 array, each in [0, classes)."""
    try:
        labels = np.array([int(tok) for tok in read_bytes(path).split()], dtype=np.int64)
    except ValueError as err:
        raise CorruptDataError(f"{path}: not a list of integer labels ({err})") from err
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise CorruptDataError(f"{path}: labels outside 0..{classes - 1}")
    return labels


def read_mat(path: Path, keys: tuple[str, ...], where: str | None = None) -> dict[str, np.ndarray]:
    """The arrays `keys` of a MATLAB (v4-v7) file; a file scipy cannot parse, or one lacking a key, is a
    CorruptDataError naming the file."""
    import scipy.io  # imported here: only the .mat datasets need scipy

    where = where or str(path)
    try:
        content = scipy.io.loadmat(path, variable_names=list(keys))
    except (ValueError, TypeError, OSError, EOFError, IndexError, KeyError, NotImplementedError, zlib.error,
            scipy.io.matlab.MatReadError) as err:
        raise CorruptDataError(f"{where}: not a readable MATLAB file ({type(err).__name__}: {err}); "
                               f"delete it and fetch it again") from err
    missing = [k for k in keys if k not in content or not isinstance(content[k], np.ndarray)]
    if missing:
        raise CorruptDataError(f"{where}: MATLAB file lacks the array(s) {', '.join(missing)}")
    return {k: content[k] for k in keys}


def check_images(x: np.ndarray, rows: int | None, pixels: int, values: str, where: str, key: str) -> None:
    """CorruptDataError unless `x` is [rows, pixels] (rows None: any) with `values` "binary" ({0, 1}),
    "unit" (within [0, 1]) or "uint8" (integers 0..255)."""
    if x.ndim != 2 or x.shape[1] != pixels or (rows is not None and x.shape[0] != rows):
        expected = f"{rows if rows is not None else 'N'}x{pixels}"
        raise CorruptDataError(f"{where}: {key} has shape {'x'.join(map(str, x.shape))}, expected {expected}")
    if not x.size:
        return
    if values == "binary":
        bad = not np.isin(x, (0, 1)).all()
        expected = "only 0/1 values"
    elif values == "unit":
        bad = not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1)
        expected = "values in [0, 1]"
    else:
        bad = not (x.dtype == np.uint8 or (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 255))
        expected = "integer values 0..255"
    if bad:
        raise CorruptDataError(f"{where}: {key} has values in [{x.min()}, {x.max()}]; expected {expected}")
