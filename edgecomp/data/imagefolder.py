"""`imagefolder:DIR`: DIR/<class>/<image>, one sub-folder per class (sorted names -> labels 0..K-1).

Images become float32 CHW in [0, 1]: 1 channel when every image is grayscale, else RGB (alpha and
palettes are converted away). All images must have the same size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecomp.data.dataset import ArrayDataset
from edgecomp.errors import UserInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
_GRAY_MODES = {"1", "L", "LA", "I;16", "I;16L", "I;16B", "I"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I"}


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _decode(img, gray: bool) -> np.ndarray:
    """A PIL image -> float32 (C, H, W) in [0, 1]."""
    if gray and img.mode in _SIXTEEN_BIT:
        return (np.asarray(img, dtype=np.float32) / 65535.0).clip(0.0, 1.0)[None]
    if gray:
        return np.asarray(img.convert("L"), dtype=np.float32)[None] / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


def load_imagefolder(root: str) -> ArrayDataset:
    from PIL import Image, UnidentifiedImageError

    directory = Path(root)
    if not directory.is_dir():
        raise UserInputError(f"imagefolder {root}: not a directory")
    class_dirs = sorted((p for p in directory.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)
    if not class_dirs:
        raise UserInputError(f"imagefolder {root}: no class sub-folders; expected {root}/<class>/<image>.png")
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(p for p in class_dir.rglob("*") if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UserInputError(f"imagefolder {root}: class folder {class_dir.name!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files.extend((p, label) for p in images)

    opened = []
    for path, _ in files:
        try:
            with Image.open(path) as img:
                img.load()
                opened.append(img.copy() if img.mode != "P" else img.convert("RGBA"))
        except (OSError, UnidentifiedImageError) as exc:
            raise UserInputError(f"imagefolder {root}: cannot read image {path}: {exc}") from None
    first_size, first_path = opened[0].size, files[0][0]
    for img, (path, _) in zip(opened, files):
        if img.size != first_size:
            raise UserInputError(
                f"imagefolder {root}: images differ in size: {first_path} is {first_size[0]}x{first_size[1]}, "
                f"{path} is {img.size[0]}x{img.size[1]} (resize them to one size first)"
            )
    gray = all(img.mode in _GRAY_MODES for img in opened)
    x = np.stack([_decode(img, gray) for img in opened]).astype(np.float32)
    y = np.array([label for _, label in files], dtype=np.int64)
    names = [p.name for p in class_dirs]
    return ArrayDataset(x, y, name=f"imagefolder:{root}", num_classes=len(names), classes=names)
