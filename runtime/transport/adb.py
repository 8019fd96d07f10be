"""Run the agent on an Android device through `adb` (push / shell / pull).

`adb shell` returns the remote exit status (adb >= 1.0.36 with the shell v2 protocol). The
device needs an interpreter with numpy and onnxruntime reachable from `adb shell` (e.g. Termux's
python, or one pushed to /data/local/tmp), named by the profile's target.python; the work
directory must be writable and executable from the shell (/data/local/tmp/... is).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from edgecomp.errors import MissingDependencyError
from edgecomp.runtime.errors import TargetConnectionError
from edgecomp.runtime.transport.base import Completed, Transport, run_subprocess

ENV_ADB = "EDGECOMP_ADB"

_ADB_FAILURES = re.compile(
    r"no devices/emulators found|device offline|device '.*' not found|more than one device|unauthorized|"
    r"device not found|cannot connect|failed to connect|closed|protocol fault",
    re.IGNORECASE,
)


class AdbTransport(Transport):
    kind = "adb"

    def __init__(self, serial: str | None = None, *, python: str = "python3",
                 workdir: str = "/data/local/tmp/edgecomp", adb_binary: str | None = None):
        super().__init__(python=python, workdir=workdir)
        self.serial = serial
        self.adb = adb_binary or os.environ.get(ENV_ADB) or shutil.which("adb")
        if not self.adb:
            raise MissingDependencyError("the Android Debug Bridge (adb)",
                                         "apt-get install adb (or Android SDK platform-tools)")

    @property
    def url(self) -> str:
        return f"adb://{self.serial}" if self.serial else "adb"

    def _base(self) -> list[str]:
        return [self.adb] + (["-s", self.serial] if self.serial else [])

    def _check(self, done: Completed, phase: str) -> Completed:
        # adb reports its own failures (no device, offline, ...) on stderr with a non-zero status
        if done.returncode != 0 and _ADB_FAILURES.search(done.stderr):
            last = done.stderr.strip().splitlines()[-1]
            if phase == "run":
                raise TargetConnectionError(f"connection to {self.url} dropped during the measurement: {last}")
            raise TargetConnectionError(f"cannot reach {self.url}: {last}")
        return done

    def shell(self, command, *, stdin=None, timeout=None, phase="setup") -> Completed:
        if stdin is not None:
            raise ValueError("adb shell input is not supported; use upload()")
        done = run_subprocess([*self._base(), "shell", command], stdin=None, timeout=timeout,
                              what=f"adb on {self.url} ({phase})")
        return self._check(done, phase)

    def upload(self, local: Path, remote: str) -> None:
        done = run_subprocess([*self._base(), "push", str(local), remote], stdin=None, timeout=None,
                              what=f"adb push to {self.url}")
        self._check(done, "upload")
        if done.returncode != 0:
            raise TargetConnectionError(f"adb push of {Path(local).name} to {self.url} failed: {done.stderr.strip()}")

    def download(self, remote: str, local: Path) -> None:
        done = run_subprocess([*self._base(), "pull", remote, str(local)], stdin=None, timeout=None,
                              what=f"adb pull from {self.url}")
        self._check(done, "run")
        if done.returncode != 0:
            raise TargetConnectionError(f"adb pull of {remote} from {self.url} failed: {done.stderr.strip()}")
