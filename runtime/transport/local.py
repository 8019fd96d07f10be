"""Run the agent on this machine, in a subprocess (the same code path as a remote target, minus copies).

Files are used where they are (no staging copies); the work directory only holds per-run outputs.
The interpreter defaults to the host's own (sys.executable), which has numpy and onnxruntime.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from edgecomp.runtime.transport.base import Completed, Transport, run_subprocess


class LocalTransport(Transport):
    kind = "local"

    def __init__(self, *, python: str | None = None, workdir: str | None = None):
        workdir = workdir or str(Path(tempfile.gettempdir()) / "edgecomp-local")
        super().__init__(python=python or sys.executable, workdir=workdir)

    @property
    def url(self) -> str:
        return "local"

    @property
    def is_local(self) -> bool:
        return True

    def shell(self, command, *, stdin=None, timeout=None, phase="setup") -> Completed:
        return run_subprocess(["/bin/sh", "-c", command], stdin=stdin, timeout=timeout, what=f"local command ({phase})")

    def prepare(self) -> None:
        Path(self.path("runs")).mkdir(parents=True, exist_ok=True)
        self._blobs = set()

    def stage(self, local) -> str:
        path = Path(local).resolve()
        if not path.is_file():
            raise FileNotFoundError(path)
        return str(path)

    def remove_run_dir(self, run_id: str) -> None:
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def upload(self, local: Path, remote: str) -> None:  # pragma: no cover - stage() never uploads
        shutil.copyfile(local, remote)

    def download(self, remote: str, local: Path) -> None:
        if Path(remote).resolve() != Path(local).resolve():
            shutil.copyfile(remote, local)
