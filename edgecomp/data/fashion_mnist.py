"""Fashion-MNIST from the IDX files of the Debian package `dataset-fashion-mnist`.

Images: float32 in [0, 1] (pixel / 255, no normalization), shape (1, 28, 28). Labels: int64 0..9.
train: 60000 samples, test: 10000 (other counts are accepted from $EDGECOMP_FASHION_MNIST_DIR).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from edgecomp.data.dataset import ArrayDataset
from edgecomp.data.idx import read_idx
from edgecomp.errors import UserInputError

ENV_DIR = "EDGECOMP_FASHION_MNIST_DIR"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = f"install it with `apt-get install -y dataset-fashion-mnist` or set ${ENV_DIR} to a folder with the IDX files"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = {"train": "train", "test": "t10k"}  # split -> file name prefix


def data_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


def _find(directory: Path, prefix: str, kind: str, ndim: int) -> Path:
    """The first existing file among the usual spellings (with or without .gz, '-' or '.' before idx)."""
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    for stem in stems:
        for name in (f"{stem}.gz", stem):
            if (directory / name).is_file():
                return directory / name
    raise UserInputError(f"Fashion-MNIST file {stems[0]}.gz not found in {directory}: {INSTALL_HINT}")


@functools.lru_cache(maxsize=4)
def _load_arrays(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded (uint8 images (N, 1, 28, 28), int64 labels (N,)), cached per process."""
    prefix = SPLITS[split]
    images_path = _find(Path(directory), prefix, "images", 3)
    labels_path = _find(Path(directory), prefix, "labels", 1)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserInputError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise UserInputError(f"{labels_path}: expected a uint8 label vector, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise UserInputError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(labels) == 0:
        raise UserInputError(f"{labels_path}: no samples")
    if labels.max() >= len(CLASSES):
        raise UserInputError(f"{labels_path}: label {int(labels.max())} out of range 0..{len(CLASSES) - 1}")
    # Shared by every dataset built from the cache: ArrayDataset never writes to its arrays.
    return images[:, None, :, :], labels.astype(np.int64)


def load_fashion_mnist(split: str = "train") -> ArrayDataset:
    if split not in SPLITS:
        raise UserInputError(f"unknown Fashion-MNIST split {split!r}; use one of: {', '.join(SPLITS)}")
    directory = data_dir()
    if not directory.is_dir():
        raise UserInputError(f"Fashion-MNIST directory {directory} not found: {INSTALL_HINT}")
    images, labels = _load_arrays(str(directory.resolve()), split)
    return ArrayDataset(images, labels, name=f"fashion-mnist:{split}", num_classes=len(CLASSES), classes=CLASSES)
