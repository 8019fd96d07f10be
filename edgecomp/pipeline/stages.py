"""Resumable stages: each stage owns a folder and is finished when its stage.json is written.

stage.json holds the stage's inputs (with the sha256 of every file they name, read from disk when
the stage is asked for: edgecomp.pipeline.fingerprints) and the sha256 of every file the stage
wrote into its folder. A re-run with the same OUTDIR reuses a stage only when both still match:
the same inputs, and every output file unchanged on disk. Otherwise the stage is redone, with a
line saying why (which inputs changed, or which output file is missing or was modified). A stage
that fails with an EdgecompError raises StageError naming itself; any other exception (a bug)
propagates unchanged, with a note naming the stage. Either way earlier stages' folders are untouched.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from edgecomp.errors import EdgecompError
from edgecomp.formats import stamp
from edgecomp.io import to_jsonable, write_json
from edgecomp.pipeline.fingerprints import STAGE_FILE, changed_files, folder_digests


class StageError(EdgecompError):
    """A stage refused on the user's or the environment's account: one line naming the stage, with the
    exit code of the EdgecompError that caused it. Only EdgecompErrors are wrapped: any other exception
    is a bug and propagates from Stages.run with its traceback (the CLI asks to report it)."""

    def __init__(self, stage: str, cause: EdgecompError):
        super().__init__(f"stage '{stage}' failed: {cause}")
        self.stage = stage
        self.exit_code = cause.exit_code


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(inputs), sort_keys=True).encode()).hexdigest()[:16]


def _changed_inputs(before: dict, now: dict) -> list[str]:
    before, now = to_jsonable(before), to_jsonable(now)
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def stale_reason(done: dict, inputs: dict, path: Path) -> str | None:
    """Why a finished stage in `path` (its stage.json `done`) cannot be reused; None if it can."""
    if done.get("fingerprint") != fingerprint(inputs):
        keys = _changed_inputs(done.get("inputs") or {}, inputs)
        return f"its inputs changed ({', '.join(keys) or 'format'})"
    if not isinstance(done.get("outputs"), dict):
        return "its stage.json has no output digests (an older edgecomp)"
    changed = changed_files(path, done["outputs"])
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return f"{shown} changed or vanished on disk since the stage wrote {'it' if len(changed) == 1 else 'them'}"
    return None


def _read_marker(marker: Path) -> dict:
    try:
        done = json.loads(marker.read_text()) if marker.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return done if isinstance(done, dict) else {}


class Stages:
    def __init__(self, outdir: Path, *, force: bool = False, log: Callable[[str], None] = print):
        self.outdir = Path(outdir)
        self.force = force
        self.log = log
        self.record: list[dict] = []

    def run(self, name: str, folder: str, inputs: dict, body: Callable[[Path], dict]) -> dict:
        """Run `body(folder)` unless a finished stage with the same inputs and intact outputs is there."""
        path = self.outdir / folder
        marker = path / STAGE_FILE
        done = _read_marker(marker)
        if not self.force and marker.is_file():
            why = stale_reason(done, inputs, path) if done else "its stage.json is unreadable"
            if why is None:
                self.log(f"[{name}] reusing finished stage in {path}")
                self.record.append({"stage": name, "folder": folder, "reused": True, "seconds": 0.0})
                return done["result"]
            self.log(f"[{name}] redoing {path}: {why}")
        else:
            self.log(f"[{name}] running")
        start = time.perf_counter()
        path.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)  # the stage is unfinished until it completes again
        # Files this stage wrote and something changed since are damaged copies of its own outputs:
        # removed, so the stage writes them afresh (they are listed in its own stage.json, never a user's).
        root = path.resolve()
        recorded = done.get("outputs") if isinstance(done.get("outputs"), dict) else {}
        for rel in changed_files(path, recorded):
            damaged = path / rel
            if not damaged.is_symlink() and damaged.resolve().is_relative_to(root):  # never outside the stage
                damaged.unlink(missing_ok=True)
        try:
            result = body(path)
        except EdgecompError as exc:
            raise StageError(name, exc) from exc
        except Exception as exc:  # our bug: keep its traceback (the CLI asks to report it), naming the stage
            if hasattr(exc, "add_note"):
                exc.add_note(f"(in edgecomp export stage '{name}', folder {path})")
            raise
        seconds = time.perf_counter() - start
        write_json(marker, stamp({"stage": name, "fingerprint": fingerprint(inputs), "inputs": inputs,
                                  "outputs": folder_digests(path), "seconds": seconds, "result": result}, "stage"))
        self.record.append({"stage": name, "folder": folder, "reused": False, "seconds": seconds})
        return result
