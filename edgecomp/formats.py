"""Versioned on-disk formats: every JSON document edgecomp writes says which format and version it is.

Convention: a top-level "format" key, "<name>/<version>" (e.g. "edgecomp-recipe/1"), written as
the document's first key by `stamp(doc, kind)`. recipe.json and the manifest used it already
(as version 1); report.json, stage.json and the harness reports joined them at version 1.

`check(doc, kind, path)` reads it back and returns the version:

* no "format" key: version 0, a file written before its kind was versioned; it is read as is
  while version 0 is still readable (`Format.oldest`), the reader checking the fields it needs;
* a version below `Format.oldest`: UserInputError saying how to rewrite the file;
* a version above `Format.version`: UserInputError saying to upgrade edgecomp;
* another name: UserInputError (the file is some other document).

Bump a kind's `version` when a reader of the old version would misread the new one (a field
renamed or given another meaning), not when fields are only added.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from edgecomp import __version__
from edgecomp.errors import UserInputError

FORMAT_KEY = "format"
_TAG = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)/(?P<version>[0-9]+)$")


@dataclass(frozen=True)
class Format:
    """One kind of document: its name, the version this edgecomp writes and the oldest it reads."""

    name: str
    version: int
    what: str  # "a compress recipe": what the file is, for messages
    rewrite: str  # how to write the file afresh ("{dir}": the file's folder), for too-old files
    oldest: int = 0


FORMATS: dict[str, Format] = {
    "recipe": Format("edgecomp-recipe", 1, "an edgecomp recipe",
                     "re-run `edgecomp compress MODEL -o {dir}` to rewrite it"),
    "manifest": Format("edgecomp-manifest", 1, "an edgecomp output manifest",
                       "re-run `edgecomp compress MODEL -o {dir}` to rewrite it, or choose another output directory"),
    "compress-report": Format("edgecomp-compress-report", 1, "an edgecomp compress report",
                              "re-run `edgecomp compress MODEL -o {dir}` to rewrite it"),
    "export-report": Format("edgecomp-export-report", 1, "an edgecomp export report",
                            "re-run `edgecomp export ... -o {dir}` to rewrite it"),
    "stage": Format("edgecomp-stage", 1, "an edgecomp export stage record",
                    "delete it to redo that stage"),
    "profile-report": Format("edgecomp-profile-report", 1, "an edgecomp measurement report",
                             "measure again with `edgecomp profile`"),
    "verify-report": Format("edgecomp-verify-report", 1, "an edgecomp verification report",
                            "verify again with `edgecomp verify`"),
}


def _format(kind: str) -> Format:
    try:
        return FORMATS[kind]
    except KeyError:
        raise ValueError(f"unknown document kind {kind!r}; known: {', '.join(FORMATS)}") from None


def tag(kind: str) -> str:
    """The "format" value this edgecomp writes for `kind`: "<name>/<version>"."""
    fmt = _format(kind)
    return f"{fmt.name}/{fmt.version}"


def stamp(doc: dict, kind: str) -> dict:
    """A copy of `doc` with the current "format" of `kind` as its first key (replacing any there)."""
    return {FORMAT_KEY: tag(kind), **{k: v for k, v in doc.items() if k != FORMAT_KEY}}


def _where(path: str | Path) -> str:
    path = Path(path)
    return f"{path.name} in {path.parent}"


def check(doc: object, kind: str, path: str | Path) -> int:
    """The format version of `doc`, read from the file `path`, once this edgecomp can read it.

    0 when `doc` has no "format" key (written before versions). Raises UserInputError (one line,
    saying what to do) when `doc` is not a JSON object, is another kind of document, is older than
    this edgecomp reads, or is newer than it knows.
    """
    fmt = _format(kind)
    where = _where(path)
    if not isinstance(doc, dict):
        raise UserInputError(f"{where} is not {fmt.what} (a JSON {type(doc).__name__}, not an object)")
    found = doc.get(FORMAT_KEY)
    if found is None:
        version = 0
    else:
        match = _TAG.match(found) if isinstance(found, str) else None
        if match is None or match["name"] != fmt.name:
            raise UserInputError(f"{where} is not {fmt.what} (its format is {found!r}, expected {fmt.name}/N)")
        version = int(match["version"])
    if version > fmt.version:
        raise UserInputError(f"{where} was written by a newer edgecomp (format {found}; edgecomp {__version__} "
                             f"reads {fmt.name} up to version {fmt.version}): upgrade edgecomp to read it")
    if version < fmt.oldest:
        written = "no format version" if found is None else f"format {found}"
        raise UserInputError(f"{where} was written by an older edgecomp ({written}); "
                             + fmt.rewrite.format(dir=Path(path).parent))
    return version


def read_optional(path: str | Path, kind: str) -> dict | None:
    """The JSON document of `kind` at `path`, checked (see `check`); None when there is no such file or
    it is not JSON (for files a reader can do without, such as a compress report.json)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    check(doc, kind, path)
    return doc
