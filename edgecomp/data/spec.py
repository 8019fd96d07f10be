"""Dataset specs: one string names the data every command evaluates, calibrates or fine-tunes on.

    fashion-mnist[:train|:test]     the Debian dataset-fashion-mnist IDX files (default split: train)
    npz:FILE                        arrays x (N, ...) float and optional y (N,) int
    imagefolder:DIR                 DIR/<class>/<image>
    module:callable                 a Python callable returning a torch Dataset
    path/file.py:callable           the same, from a file
    FILE.npz / DIR                  shorthands for npz:FILE / imagefolder:DIR
"""

from __future__ import annotations

from pathlib import Path

from edgecomp.data.dataset import EdgeDataset
from edgecomp.errors import UserInputError

SPEC_HELP = "fashion-mnist[:train|:test], npz:FILE, imagefolder:DIR, module:callable or path/file.py:callable"


def load_dataset(spec: str) -> EdgeDataset:
    """Load the dataset a spec names (see the module docstring)."""
    text = str(spec).strip()
    if not text:
        raise UserInputError(f"empty dataset spec; expected {SPEC_HELP}")
    kind, sep, rest = text.partition(":")
    if kind.lower() == "fashion-mnist":
        from edgecomp.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(rest.lower() if sep else "train")
    if kind == "npz" and sep:
        from edgecomp.data.npz import load_npz

        return load_npz(rest)
    if kind == "imagefolder" and sep:
        from edgecomp.data.imagefolder import load_imagefolder

        return load_imagefolder(rest)
    if ":" in text:
        from edgecomp.data.custom import load_callable

        return load_callable(text)
    path = Path(text)
    if path.suffix == ".npz":
        from edgecomp.data.npz import load_npz

        return load_npz(text)
    if path.is_dir():
        from edgecomp.data.imagefolder import load_imagefolder

        return load_imagefolder(text)
    raise UserInputError(f"unknown dataset spec {text!r}; expected {SPEC_HELP}")
