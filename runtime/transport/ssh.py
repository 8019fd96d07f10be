"""Run the agent on a host reached with the system OpenSSH client (`ssh`), key-based auth only.

Every call is `ssh -T -o BatchMode=yes -o ConnectTimeout=N -o ServerAliveInterval=15
-o ServerAliveCountMax=4 [-p PORT] [-i IDENTITY] [EXTRA...] [user@]host COMMAND`:
BatchMode makes ssh fail instead of prompting for a password or a host key; the keepalives turn a
silently dead link into an error within about a minute instead of a hang. The calls of one run share
one connection (ControlMaster, socket in a private temp dir, stopped by close()). Files travel over the
same channel (`cat > tmp` on the target), so the target needs no scp/sftp, only a POSIX shell.

Identity file and extra options come from the URL query (`ssh://user@host:2222?identity_file=PATH
&option=StrictHostKeyChecking=accept-new`), the environment (EDGECOMP_SSH_IDENTITY,
EDGECOMP_SSH_OPTIONS: extra ssh arguments, shell-quoted) or the API; the user's keys and agent
(SSH_AUTH_SOCK) are used as usual. Passwords are never used.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

from edgecomp.errors import MissingDependencyError
from edgecomp.runtime.errors import TargetConnectionError
from edgecomp.runtime.transport.base import Completed, Transport, run_subprocess

ENV_IDENTITY = "EDGECOMP_SSH_IDENTITY"
ENV_OPTIONS = "EDGECOMP_SSH_OPTIONS"
ENV_SSH = "EDGECOMP_SSH"
SSH_FAILURE = 255  # ssh's own exit status for connection/authentication errors

_DIAGNOSES = [
    (r"connection refused", "connection refused (is sshd running there, and is the port right?)"),
    (r"connection timed out|operation timed out|timed out", "connection timed out"),
    (r"could not resolve hostname|name or service not known|nodename nor servname",
     "cannot resolve the host name"),
    (r"no route to host|network is unreachable|host is unreachable", "the host is unreachable"),
    (r"host key verification failed|remote host identification has changed",
     "host key verification failed (connect once interactively to accept the key, or add "
     f"'-o StrictHostKeyChecking=accept-new' to ${ENV_OPTIONS})"),
    (r"permission denied", "authentication failed: edgecomp uses key-based auth only (BatchMode); install your "
     f"public key in the target's authorized_keys or name a key with ${ENV_IDENTITY} / ?identity_file="),
    (r"closed by remote host|connection reset|broken pipe|connection closed|not responding|client_loop|"
     r"kex_exchange_identification|connection to .* closed", "the connection was closed"),
]


def diagnose(stderr: str) -> str:
    text = stderr.lower()
    for pattern, meaning in _DIAGNOSES:
        if re.search(pattern, text):
            return meaning
    return "ssh failed"


class SshTransport(Transport):
    kind = "ssh"

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        python: str = "python3",
        workdir: str = "/tmp/edgecomp",
        identity_file: str | None = None,
        options: Sequence[str] = (),
        connect_timeout: float = 10.0,
        ssh_binary: str | None = None,
        multiplex: bool = True,
    ):
        # ~/x on the target: ssh starts in the home directory, so make it relative to it
        if workdir.startswith("~/"):
            workdir = workdir[2:] or "."
        super().__init__(python=python, workdir=workdir)
        self.host, self.user, self.port = host, user, port
        self.connect_timeout = connect_timeout
        self.ssh = ssh_binary or os.environ.get(ENV_SSH) or shutil.which("ssh")
        if not self.ssh:
            raise MissingDependencyError("the OpenSSH client (ssh)", "apt-get install openssh-client")
        # One TCP/SSH handshake for all the calls of a run (ControlMaster); closed by close().
        self._control_dir = tempfile.mkdtemp(prefix="edgecomp-ssh-") if multiplex else None
        self._control_path = os.path.join(self._control_dir, "cm") if multiplex else ""
        identity_file = identity_file or os.environ.get(ENV_IDENTITY)
        self.identity_file = str(Path(identity_file).expanduser()) if identity_file else None
        self.extra = [*shlex.split(os.environ.get(ENV_OPTIONS, "")), *options]

    @property
    def url(self) -> str:
        who = f"{self.user}@{self.host}" if self.user else self.host
        return f"ssh://{who}" + (f":{self.port}" if self.port else "")

    def argv(self, command: str) -> list[str]:
        args = [
            self.ssh, "-T",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, int(round(self.connect_timeout)))}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
        ]
        if self._control_dir is not None:
            args += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_path}",
                     "-o", "ControlPersist=60"]
        if self.port:
            args += ["-p", str(self.port)]
        if self.identity_file:
            args += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        args += self.extra
        args += [self._destination(), command]
        return args

    def _destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def shell(self, command, *, stdin=None, timeout=None, phase="setup") -> Completed:
        done = run_subprocess(self.argv(command), stdin=stdin, timeout=timeout, what=f"ssh to {self.url} ({phase})")
        if done.returncode == SSH_FAILURE:
            raise self._connection_error(done, phase)
        return done

    def _connection_error(self, done: Completed, phase: str) -> TargetConnectionError:
        detail = done.stderr.strip().splitlines()
        last = detail[-1] if detail else "no message"
        meaning = diagnose(done.stderr)
        if phase == "run":
            return TargetConnectionError(
                f"connection to {self.url} dropped during the measurement ({meaning}): {last}; "
                "no result was produced -- check the link/target and run again"
            )
        return TargetConnectionError(f"cannot reach {self.url}: {meaning}: {last}")

    def upload(self, local: Path, remote: str) -> None:
        data = Path(local).read_bytes()
        done = self.shell(f"cat > {shlex.quote(remote)}", stdin=data, phase="upload")
        if done.returncode != 0:
            raise TargetConnectionError(f"copying {Path(local).name} to {self.url} failed: {done.stderr.strip()}")

    def upload_atomic(self, local: Path, remote: str) -> None:
        """One round trip: write to a temporary name (unique per upload) and rename it in the same remote command."""
        tmp = f"{remote}.{uuid.uuid4().hex[:12]}.partial"
        q_tmp, q_remote = shlex.quote(tmp), shlex.quote(remote)
        done = self.shell(f"cat > {q_tmp} && mv -f {q_tmp} {q_remote}", stdin=Path(local).read_bytes(),
                          phase="upload")
        if done.returncode != 0:
            raise TargetConnectionError(f"copying {Path(local).name} to {self.url} failed: {done.stderr.strip()}")

    def close(self) -> None:
        """Stop the multiplexing master connection (if one was started) and remove its socket directory."""
        if self._control_dir is None:
            return
        import subprocess

        if os.path.exists(self._control_path):
            subprocess.run([self.ssh, "-o", f"ControlPath={self._control_path}", "-O", "exit", self._destination()],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def download(self, remote: str, local: Path) -> None:
        argv = self.argv(f"cat {shlex.quote(remote)}")
        import subprocess

        with open(local, "wb") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, check=False)
        if proc.returncode == SSH_FAILURE:
            raise self._connection_error(Completed(proc.returncode, "", proc.stderr.decode("utf-8", "replace")), "run")
        if proc.returncode != 0:
            raise TargetConnectionError(
                f"fetching {remote} from {self.url} failed: {proc.stderr.decode('utf-8', 'replace').strip()}"
            )
