"""Reader for the IDX format (the MNIST / Fashion-MNIST file format), gzip-compressed or raw.

Layout (big-endian): two zero bytes, a type code, the number of dimensions n, then n uint32
dimension sizes, then prod(dims) items of the given type in C order.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from edgecomp.errors import UserInputError

IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, where: str = "<idx>") -> np.ndarray:
    """Decode IDX bytes into a writable array in native byte order."""
    if len(data) < 4:
        raise UserInputError(f"{where}: too short to be an IDX file ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_TYPES:
        raise UserInputError(f"{where}: not an IDX file (bad magic number {data[:4].hex()})")
    if ndim == 0:
        raise UserInputError(f"{where}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserInputError(f"{where}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserInputError(
            f"{where}: IDX payload is {len(data) - header} bytes, dimensions {dims} of {dtype.name} need {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file; gzip is detected from the content, not the file name."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserInputError(f"{path}: cannot read IDX file: {exc}") from None
    return parse_idx(raw, str(path))
