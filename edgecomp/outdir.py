"""An edgecomp output directory: which files in it edgecomp wrote, and replacing only those.

`compress -o DIR` writes model.safetensors, model.onnx, report.json, ranks.png and recipe.json and
lists every file edgecomp wrote into DIR in DIR/.edgecomp-manifest.json, with its sha256 and the
command that wrote it (`convert` and `verify` add the files they write there). Writing into DIR
again replaces a file only when the manifest lists it and it is unchanged since; any other file is
the user's and is never replaced or deleted: a run that would have to refuses (UserInputError) and
says which file and what to do. A directory from before manifests (recipe.json, no manifest)
counts its known output files as edgecomp's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from edgecomp.errors import UserInputError
from edgecomp.formats import check, stamp, tag
from edgecomp.io import _umask, sha256_file, write_json

MANIFEST_FILE = ".edgecomp-manifest.json"
MANIFEST_FORMAT = tag("manifest")  # "edgecomp-manifest/1" (edgecomp.formats)
RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
REPORT_FILE = "report.json"
RANKS_FILE = "ranks.png"
# What compress writes, in the order it moves them into place: recipe.json (which makes the directory
# an output directory) last, then the manifest.
COMPRESS_FILES = (WEIGHTS_FILE, ONNX_FILE, REPORT_FILE, RANKS_FILE, RECIPE_FILE)


def is_outdir(path: str | os.PathLike) -> bool:
    return (Path(path) / RECIPE_FILE).is_file()


def read_manifest(outdir: str | os.PathLike) -> dict[str, dict]:
    """{file name: {"sha256", "by"}} for the files edgecomp wrote into `outdir` ({} if it wrote none)."""
    outdir = Path(outdir)
    path = outdir / MANIFEST_FILE
    if not path.is_file():
        if not is_outdir(outdir):
            return {}
        # Written before manifests existed: its known output files are edgecomp's.
        return {name: {"sha256": sha256_file(outdir / name), "by": "edgecomp (no manifest)"}
                for name in COMPRESS_FILES if (outdir / name).is_file() and not (outdir / name).is_symlink()}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        check(doc, "manifest", path)  # UserInputError (not caught here) for a newer edgecomp's or another file
        files = {str(name): dict(entry) for name, entry in doc["files"].items()
                 if Path(str(name)).name == str(name) and isinstance(entry.get("sha256"), str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserInputError(f"{path} is unreadable ({exc}), so edgecomp cannot tell its files from yours there; "
                             "choose another output directory") from None
    return files


def _write_manifest(outdir: Path, files: dict[str, dict]) -> None:
    write_json(outdir / MANIFEST_FILE, stamp({"files": dict(sorted(files.items()))}, "manifest"))


def _owned(path: Path, entry: dict | None) -> bool:
    """True when edgecomp wrote `path` and nobody changed it since (a half-finished replacement counts)."""
    if entry is None or path.is_symlink() or not path.is_file():
        return False
    return sha256_file(path) in (entry.get("sha256"), entry.get("previous_sha256"))


def check_replaceable(outdir: str | os.PathLike, names: Iterable[str], *, option: str = "-o") -> None:
    """Raise UserInputError unless each of `names` is absent from `outdir` or a file edgecomp wrote there
    (unchanged), and `outdir` is new, empty or an edgecomp output directory."""
    outdir = Path(outdir)
    if outdir.is_symlink() and not outdir.exists():
        raise UserInputError(f"{outdir} is a broken symbolic link: refusing to write through it; "
                             f"choose another {option}")
    if not outdir.exists():
        return
    if not outdir.is_dir():
        raise UserInputError(f"{outdir} exists and is not a directory: refusing to replace it; choose another {option}")
    manifest = read_manifest(outdir)
    if not manifest and any(outdir.iterdir()):
        raise UserInputError(f"{outdir} exists and is not an edgecomp output directory: refusing to write into it; "
                             f"choose another {option} (a new or empty directory)")
    for name in names:
        path = outdir / name
        if not (path.exists() or path.is_symlink()) or _owned(path, manifest.get(name)):
            continue
        why = "edgecomp did not write it" if name not in manifest else "it changed since edgecomp wrote it"
        raise UserInputError(f"{path} exists and {why}: refusing to replace it; move it away or choose another "
                             f"{option}")


def record(paths: Iterable[str | os.PathLike], by: str) -> None:
    """List files edgecomp just wrote in the manifest of the output directory each one is in (files
    outside an output directory are left alone), so a later `compress -o` there may replace them."""
    groups: dict[Path, list[Path]] = {}
    for p in paths:
        p = Path(p)
        if p.is_file() and not p.is_symlink() and is_outdir(p.parent):
            groups.setdefault(p.parent, []).append(p)
    for outdir, files in groups.items():
        manifest = read_manifest(outdir)
        for p in files:
            manifest[p.name] = {"sha256": sha256_file(p), "by": by}
        _write_manifest(outdir, manifest)


@contextlib.contextmanager
def replace_outputs(outdir: str | os.PathLike, names: Sequence[str], *, by: str,
                    log: Callable[[str], None] = print) -> Iterator[Path]:
    """Yield an empty staging directory beside `outdir`; when the block succeeds, move the files among
    `names` that it wrote into `outdir`, in that order, and record them in the manifest.

    A new `outdir` appears at once, complete. Into an existing one the files move one by one (each
    rename atomic), the manifest last; a file edgecomp wrote before that this run did not write again
    (among `names`) would be stale and is removed. Every other file is kept. Refuses (before the block
    and again before moving) when a file would replace one that is not edgecomp's (check_replaceable).
    """
    outdir = Path(outdir)
    check_replaceable(outdir, names)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        written = [n for n in names if (staging / n).is_file()]
        hashes = {n: sha256_file(staging / n) for n in written}
        if not outdir.exists():
            _write_manifest(staging, {n: {"sha256": hashes[n], "by": by} for n in written})
            os.replace(staging, outdir)
            return
        check_replaceable(outdir, names)  # again: the user may have put files there meanwhile
        manifest = read_manifest(outdir)
        final = dict(manifest)
        for n in written:
            entry = {"sha256": hashes[n], "by": by}
            final[n] = entry
            if n in manifest:  # until it is moved, the file there may still be the old one
                entry = {**entry, "previous_sha256": manifest[n]["sha256"]}
            manifest[n] = entry
        _write_manifest(outdir, manifest)
        for n in written:
            os.replace(staging / n, outdir / n)
        stale = [n for n in names if n not in written and n in final and (outdir / n).is_file()]
        for n in stale:
            (outdir / n).unlink()
            del final[n]
        _write_manifest(outdir, final)
        if stale:
            log(f"note: removed {', '.join(stale)} from {outdir}: made from the previous model, not written this time")
        kept = sorted(n for n in final if n not in names)
        if kept:
            log(f"note: kept {', '.join(kept)} in {outdir} from an earlier run (made from the previous model)")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
