"""`npz:FILE`: a NumPy .npz archive with float samples `x` (N, ...) and optional int labels `y` (N,)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edgecomp.data.dataset import ArrayDataset
from edgecomp.errors import UserInputError


ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
SAVE_HINT = "save with np.savez(path, x=..., y=...)"


def _check_container(file: Path, path: str) -> None:
    """An .npz is a zip archive; anything else is named for what it is before NumPy reads it (given other
    bytes, np.load would try them as a pickle and blame 'pickled data')."""
    try:
        with open(file, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read: {exc}") from None
    if head.startswith(NPY_MAGIC):
        raise UserInputError(f"{path}: a single .npy array, not an .npz archive; {SAVE_HINT}")
    if not head.startswith(ZIP_MAGIC) or not zipfile.is_zipfile(file):
        raise UserInputError(f"{path} is corrupt or not an .npz file (not a zip archive); {SAVE_HINT}")


def load_npz(path: str) -> ArrayDataset:
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"npz dataset {path}: file not found")
    _check_container(file, path)
    try:
        # allow_pickle=False: object arrays would unpickle arbitrary code.
        with np.load(file, allow_pickle=False) as archive:
            keys = set(archive.files)
            if "x" not in keys:
                raise UserInputError(f"{path}: no array named 'x' (found: {', '.join(sorted(keys)) or 'none'}); save with np.savez(path, x=..., y=...)")
            x = archive["x"]
            y = archive["y"] if "y" in keys else None
    except UserInputError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array: loading it would unpickle code
            raise UserInputError(f"{path}: holds object (pickled) arrays, which edgecomp does not load; save numeric "
                                 "arrays x (float) and y (int)") from None
        raise UserInputError(f"{path} is corrupt or not an .npz file: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise UserInputError(f"{path} is corrupt or not an .npz file: {exc}") from None

    if not np.issubdtype(x.dtype, np.floating):
        raise UserInputError(f"{path}: x must be a floating-point array, got {x.dtype} (scale integer images to [0, 1] floats)")
    if x.ndim < 2:
        raise UserInputError(f"{path}: x must have shape (N, ...) with at least 2 dimensions, got {x.shape}")
    if len(x) == 0:
        raise UserInputError(f"{path}: x holds no samples")
    if not np.all(np.isfinite(x)):
        raise UserInputError(f"{path}: x contains NaN or infinite values")
    num_classes = None
    if y is not None:
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise UserInputError(f"{path}: y must be an integer array of class indices, got {y.dtype}")
        if y.ndim != 1:
            raise UserInputError(f"{path}: y must have shape (N,), got {y.shape}")
        if len(y) != len(x):
            raise UserInputError(f"{path}: x has {len(x)} samples but y has {len(y)} labels")
        if y.min() < 0:
            raise UserInputError(f"{path}: y has negative label {int(y.min())}; labels must be class indices >= 0")
        num_classes = int(y.max()) + 1
    return ArrayDataset(x.astype(np.float32), y, name=f"npz:{path}", num_classes=num_classes)
