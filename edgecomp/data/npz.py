"""`npz:FILE`: a NumPy .npz archive with float samples `x` (N, ...) and optional int labels `y` (N,)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edgecomp.data.dataset import ArrayDataset
from edgecomp.errors import UserInputError


def load_npz(path: str) -> ArrayDataset:
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"npz dataset {path}: file not found")
    try:
        # allow_pickle=False: object arrays would unpickle arbitrary code.
        with np.load(file, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise UserInputError(f"{path}: not an .npz archive (a single .npy array?); save with np.savez(path, x=..., y=...)")
            keys = set(archive.files)
            if "x" not in keys:
                raise UserInputError(f"{path}: no array named 'x' (found: {', '.join(sorted(keys)) or 'none'}); save with np.savez(path, x=..., y=...)")
            x = archive["x"]
            y = archive["y"] if "y" in keys else None
    except UserInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"{path}: cannot read .npz archive: {exc}") from None

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
