"""What a stage depends on, read from the files on disk (never from what an earlier run recorded).

A stage of `edgecomp export` is reused only when these digests still match:

* a file: its sha256;
* a model spec `path/file.py:Factory`, or a data spec `module:callable` / `path/file.py:callable`:
  the sha256 of the Python source file that defines it, plus the spec itself (edited code means
  a different model or dataset);
* `npz:FILE` and Fashion-MNIST: the sha256 of the array / IDX files;
* `imagefolder:DIR`: a digest of every file's relative path, size and modification time (hashing
  every image of a large folder would cost more than the stage it guards);
* a folder of outputs (a stage's own folder): the sha256 of each file in it.

A stage's record, STAGE_FILE, carries its format version (edgecomp.formats, kind "stage");
`check_stage_files` refuses an OUTDIR whose records a newer edgecomp wrote before any stage reads them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

from edgecomp.errors import UserInputError
from edgecomp.formats import check
from edgecomp.io import sha256_file as io_sha256

STAGE_FILE = "stage.json"


def sha256_file(path: str | os.PathLike | None) -> str | None:
    """sha256 of a file's bytes; None when there is no such file."""
    if not path or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so a file rewritten during the run is hashed again.
    return io_sha256(path)


def folder_digests(folder: str | os.PathLike, *, exclude: tuple[str, ...] = (STAGE_FILE,)) -> dict[str, str]:
    """{relative path: sha256} of every regular file under `folder` (hidden temporaries skipped)."""
    root = Path(folder)
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel in exclude or path.name.startswith(".") and path.name.endswith(".tmp"):
            continue
        if path.is_file() and not path.is_symlink():
            out[rel] = sha256_file(path)
    return out


def check_stage_files(outdir: str | os.PathLike) -> None:
    """UserInputError when a stage record in `outdir` (OUTDIR/STAGE/stage.json or OUTDIR/round-K/STAGE/
    stage.json) has a format version newer than this edgecomp reads, or is another document. Records
    that are unreadable or from before versions (version 0) are left to the stages, which redo or
    reuse them as before."""
    root = Path(outdir)
    for marker in sorted([*root.glob(f"*/{STAGE_FILE}"), *root.glob(f"*/*/{STAGE_FILE}")]):
        try:
            doc = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        try:
            check(doc, "stage", marker)
        except UserInputError as exc:
            raise UserInputError(f"{exc}, or pass --force to redo every stage with this edgecomp") from None


def changed_files(folder: str | os.PathLike, recorded: dict[str, str]) -> list[str]:
    """The recorded files of `folder` that are missing now or whose sha256 differs."""
    root = Path(folder)
    return [rel for rel, digest in recorded.items() if sha256_file(root / rel) != digest]


def _source_file(location: str) -> Path | None:
    """The .py file behind `path/file.py` or `package.module` (None if it cannot be located)."""
    if location.endswith(".py"):
        return Path(location)
    try:  # finding package.module imports `package`: any failure there is reported when the model loads
        spec = importlib.util.find_spec(location)
    except Exception:  # noqa: BLE001
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return Path(origin) if origin and origin not in ("built-in", "frozen") else None


def _code_digest(spec: str) -> dict:
    location = spec.rpartition(":")[0]
    source = _source_file(location) if location else None
    return {"spec": spec, "source": str(source) if source else None, "source_sha256": sha256_file(source)}


def model_fingerprint(spec: str | None) -> dict | None:
    """Digest of a model spec: the factory's source file for code specs, the file for a pickle."""
    if spec is None:
        return None
    text = str(spec).strip()
    if text.startswith("zoo:") or ":" not in text:
        return {"spec": text, "file_sha256": sha256_file(text) if Path(text).is_file() else None}
    return _code_digest(text)


def module_fingerprint(module) -> dict:
    """Digest of an in-memory nn.Module (the Python API's edgecomp.export): its structure (repr) and
    every state-dict tensor's dtype, shape and bytes."""
    import torch

    h = hashlib.sha256(repr(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"\0{name}\0{t.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return {"in_memory": type(module).__name__, "sha256": h.hexdigest()}


def _imagefolder_digest(directory: Path) -> str | None:
    if not directory.is_dir():
        return None
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(directory).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def data_fingerprint(spec: str | None) -> dict | None:
    """Digest of a data spec (see the module docstring); None for no data."""
    if spec is None:
        return None
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    if kind.lower() == "fashion-mnist":
        from edgecomp.data.fashion_mnist import SPLITS, data_dir

        split = rest.lower() if sep else "train"
        prefix = SPLITS.get(split, split)
        files = sorted(p for p in data_dir().glob(f"{prefix}-*") if p.is_file())
        return {"spec": text, "files": {p.name: sha256_file(p) for p in files}}
    if kind == "npz" and sep:
        return {"spec": text, "file_sha256": sha256_file(rest)}
    if kind == "imagefolder" and sep:
        return {"spec": text, "listing": _imagefolder_digest(Path(rest))}
    if ":" in text:
        return _code_digest(text)
    if text.endswith(".npz"):
        return {"spec": text, "file_sha256": sha256_file(text)}
    return {"spec": text, "listing": _imagefolder_digest(Path(text))}
