"""What every transport does: stage files on the target by content hash, run the agent, fetch results.

Staged files live in WORKDIR/blobs/<sha256><suffix>: a file already there under its hash is not
copied again, and uploads go to a temporary name renamed into place, so a half-copied file never
carries a valid name. Per-run outputs go to WORKDIR/runs/<run id>/ and are removed after fetching.
"""

from __future__ import annotations

import posixpath
import shlex
import subprocess
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgecomp.io import sha256_file  # noqa: F401  (re-exported: blobs are named by it)
from edgecomp.runtime.errors import TargetConnectionError, TargetDependencyError, TargetError


def blob_name(path: str | Path, digest: str) -> str:
    """<sha256><suffix>: the suffix stays because runtimes pick the format by it (.onnx, .ort, .engine)."""
    return digest + "".join(Path(path).suffixes[-1:]).lower()


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """A place the agent runs. Subclasses implement the primitive operations."""

    kind: str = "abstract"

    def __init__(self, *, python: str, workdir: str):
        self.python = python
        self.workdir = workdir.rstrip("/") or "/"
        self._blobs: set[str] | None = None
        self._hashes: dict[tuple, str] = {}
        self.uploaded: list[str] = []
        self.reused: list[str] = []

    # ---- description ------------------------------------------------------------------
    @property
    @abstractmethod
    def url(self) -> str:
        """How the target is named in reports (never contains secrets)."""

    @property
    def is_local(self) -> bool:
        return False

    # ---- primitives ---------------------------------------------------------------------
    @abstractmethod
    def shell(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None,
              phase: str = "setup") -> Completed:
        """Run a POSIX shell command line on the target; connection failures raise TargetConnectionError."""

    @abstractmethod
    def upload(self, local: Path, remote: str) -> None:
        """Copy a local file to `remote` (already a temporary name; the caller renames it)."""

    @abstractmethod
    def download(self, remote: str, local: Path) -> None:
        """Copy a file from the target to `local`."""

    # ---- shared logic -------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.workdir, *parts)

    def prepare(self) -> None:
        """Create the work directory and learn which blobs are already there (one round trip)."""
        blobs, runs = shlex.quote(self.path("blobs")), shlex.quote(self.path("runs"))
        done = self.shell(f"mkdir -p {blobs} {runs} && ls -1 {blobs}", phase="connect")
        if done.returncode != 0:
            raise TargetError(f"cannot create the work directory {self.workdir!r} on {self.url}: "
                              f"{done.stderr.strip() or done.stdout.strip()}")
        self._blobs = {line.strip() for line in done.stdout.splitlines() if line.strip()}

    def stage(self, local: str | Path) -> str:
        """The target path of `local`'s content, copying it only if that hash is not there yet."""
        local = Path(local)
        if self._blobs is None:
            self.prepare()
        st = local.stat()
        key = (str(local.resolve()), st.st_size, st.st_mtime_ns)  # a rewritten file is hashed again
        digest = self._hashes.get(key) or sha256_file(local)
        self._hashes[key] = digest
        name = blob_name(local, digest)
        remote = self.path("blobs", name)
        if name in self._blobs:
            self.reused.append(name)
            return remote
        self.upload_atomic(local, remote)
        self._blobs.add(name)
        self.uploaded.append(name)
        return remote

    def upload_atomic(self, local: Path, remote: str) -> None:
        """Upload under a temporary name, then rename: a partial copy never carries the final name. The name
        is unique per upload, so boards sharing a filesystem (NFS homes, one host) never write one file."""
        name = f".{posixpath.basename(remote)}.{uuid.uuid4().hex[:12]}.partial"
        tmp = posixpath.join(posixpath.dirname(remote), name)
        self.upload(local, tmp)
        done = self.shell(f"mv -f {shlex.quote(tmp)} {shlex.quote(remote)}")
        if done.returncode != 0:
            raise TargetError(f"cannot store {local.name} on {self.url}: {done.stderr.strip()}")

    def run_dir(self, run_id: str) -> str:
        return self.path("runs", run_id)

    def remove_run_dir(self, run_id: str) -> None:
        try:
            self.shell(f"rm -rf {shlex.quote(self.run_dir(run_id))}")
        except TargetError:
            pass  # cleanup is best effort; the result is already in hand

    def agent_command(self, agent: str, args: Sequence[str]) -> str:
        """`exec PYTHON AGENT ARGS` (exec: signals reach the agent; a missing python exits 127)."""
        return " ".join(["exec", shlex.quote(self.python), shlex.quote(agent), *map(shlex.quote, args)])

    def run_agent(self, agent: str, args: Sequence[str], *, timeout: float | None = None) -> Completed:
        return self.shell(self.agent_command(agent, args), timeout=timeout, phase="run")

    def close(self) -> None:
        """Release connections (nothing by default)."""


def python_missing_error(transport: Transport, done: Completed) -> TargetDependencyError:
    return TargetDependencyError(
        f"python interpreter {transport.python!r} not found on {transport.url}: install Python 3 (with numpy and "
        f"the runtime) there or set target.python in the device profile ({done.stderr.strip()[-300:]})"
    )


def run_subprocess(argv: Sequence[str], *, stdin: bytes | None, timeout: float | None, what: str) -> Completed:
    """subprocess.run with bytes in, text out, and a timeout that becomes TargetConnectionError."""
    try:
        proc = subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TargetConnectionError(f"{what} did not finish within {timeout:g} s") from None
    return Completed(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
