"""Resumable stages: each stage owns a folder and is finished when its stage.json is written.

stage.json holds a fingerprint of the stage's inputs; a re-run with the same OUTDIR reuses a stage
whose fingerprint matches (unless forced) and redoes it otherwise. A failing stage raises
StageError naming itself and never touches earlier stages' folders.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from edgecomp.errors import EdgecompError
from edgecomp.io import to_jsonable, write_json

STAGE_FILE = "stage.json"


class StageError(EdgecompError):
    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage '{stage}' failed: {cause}")
        self.stage = stage
        self.exit_code = getattr(cause, "exit_code", 2)


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(inputs), sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: str | Path | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Stages:
    def __init__(self, outdir: Path, *, force: bool = False, log: Callable[[str], None] = print):
        self.outdir = Path(outdir)
        self.force = force
        self.log = log
        self.record: list[dict] = []

    def run(self, name: str, folder: str, inputs: dict, body: Callable[[Path], dict]) -> dict:
        """Run `body(folder)` unless a finished stage with the same inputs is there; return its result."""
        path = self.outdir / folder
        fp = fingerprint(inputs)
        marker = path / STAGE_FILE
        if not self.force and marker.is_file():
            try:
                done = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                done = {}
            if done.get("fingerprint") == fp:
                self.log(f"[{name}] reusing finished stage in {path}")
                self.record.append({"stage": name, "folder": folder, "reused": True, "seconds": 0.0})
                return done["result"]
        self.log(f"[{name}] running")
        start = time.perf_counter()
        path.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)  # the stage is unfinished until it completes again
        try:
            result = body(path)
        except EdgecompError as exc:
            raise StageError(name, exc) from exc
        except Exception as exc:  # an unexpected failure still names its stage
            raise StageError(name, exc) from exc
        seconds = time.perf_counter() - start
        write_json(marker, {"stage": name, "fingerprint": fp, "inputs": inputs, "seconds": seconds, "result": result})
        self.record.append({"stage": name, "folder": folder, "reused": False, "seconds": seconds})
        return result
