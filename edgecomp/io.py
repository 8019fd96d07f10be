"""Atomic output: a failed run never leaves a half-written artifact.

Every file edgecomp writes goes to a temporary sibling first and is renamed into place
(os.replace is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files: give the artifact the usual umask-based mode, unless the caller
        # already chose one (an executable script, say).
        if tmp_path.exists() and (tmp_path.stat().st_mode & 0o777) == 0o600:
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, Paths and dataclasses into plain JSON types."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


# Room left in the last name of an output path for the temporary sibling written first
# (".NAME.xxxxxxxx.tmp") and for the suffixes edgecomp adds to an artifact's stem (".int8.onnx").
_NAME_ROOM = 32


def check_writable(path: str | os.PathLike, *, kind: str = "file", option: str = "-o") -> Path:
    """Fail before any work when `path` could not be written as a file (kind "file"), a directory
    ("dir") or either ("any"); creates nothing. Raises UserInputError naming `option`.

    Checks: each name fits the file system (NAME_MAX bytes, the last one less room for the temporary
    sibling); no symbolic-link loop or broken link on the way; every existing ancestor is a directory;
    an existing `path` is of the right kind; and the directory it will be written in (or the nearest
    existing ancestor, where the rest is still to be created) is writable.
    """
    import errno
    import stat

    from edgecomp.errors import UserInputError

    text = os.fspath(path)
    if not str(text).strip():
        raise UserInputError(f"{option}: empty path; give a file or directory name")
    target = Path(text)

    shown = text if len(text) <= 80 else f"{text[:40]}...{text[-20:]}"

    def fail(why: str) -> UserInputError:
        return UserInputError(f"{option} {shown}: {why}")

    parts = target.parts
    current = Path(parts[0]) if target.is_absolute() else Path(".")
    names = parts[1:] if target.is_absolute() else parts
    existing = current  # the deepest existing directory on the way
    exists = False
    for i, name in enumerate(names):
        last = i == len(names) - 1
        try:
            name_max = os.pathconf(existing, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            name_max = 255
        size = len(os.fsencode(name))
        limit = name_max - _NAME_ROOM if last and name not in (".", "..") else name_max
        if size > limit:
            extra = f" ({name_max} allowed by the file system, less room for edgecomp's temporary names)" if last else ""
            raise fail(f"a name of {size} bytes is over the limit of {limit}{extra}; choose a shorter name")
        current = current / name
        try:
            info = os.stat(current)
        except FileNotFoundError:
            if os.path.islink(current):
                raise fail(f"{current} is a broken symbolic link; remove it or choose another path") from None
            break  # the rest is to be created
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise fail(f"{current} is a symbolic link loop; choose another path") from None
            if exc.errno == errno.ENOTDIR:
                raise fail(f"{current.parent} is a file, not a directory; choose another path") from None
            raise fail(f"cannot look at {current}: {exc.strerror}; choose another path") from None
        is_dir = stat.S_ISDIR(info.st_mode)
        if not last:
            if not is_dir:
                raise fail(f"{current} is a file, not a directory; choose another path")
            existing = current
            continue
        exists = True
        if kind == "dir" and not is_dir:
            raise fail("exists and is not a directory; give a directory (new or one edgecomp wrote)")
        if kind == "file" and is_dir:
            raise fail("is a directory; give a file name")
        if is_dir and not os.access(current, os.W_OK | os.X_OK):
            raise fail(f"the directory {current} is not writable; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write in" if exists or existing == target.parent else "create directories in"
        raise fail(f"cannot {what} {existing} (permission denied or read-only); choose another path")
    return target
