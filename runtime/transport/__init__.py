"""Where the agent runs: `local`, `ssh://[user@]host[:port][?identity_file=P&option=K=V]`, `adb[://SERIAL]`."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from edgecomp.errors import UserInputError
from edgecomp.runtime.transport.adb import AdbTransport
from edgecomp.runtime.transport.base import Completed, Transport, sha256_file
from edgecomp.runtime.transport.local import LocalTransport
from edgecomp.runtime.transport.ssh import SshTransport

URL_FORMS = "local, ssh://[user@]host[:port], adb or adb://SERIAL"


@dataclass(frozen=True)
class TargetURL:
    kind: str                  # local | ssh | adb
    host: str | None = None
    user: str | None = None
    port: int | None = None
    serial: str | None = None
    identity_file: str | None = None
    options: tuple[str, ...] = field(default_factory=tuple)


def parse_target(url: str) -> TargetURL:
    """Parse a target URL; UserInputError naming the accepted forms otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise UserInputError(f"empty target; expected {URL_FORMS}")
    url = url.strip()
    if url == "local":
        return TargetURL("local")
    if url == "adb":
        return TargetURL("adb")
    parts = urlsplit(url)
    if parts.scheme == "adb":
        serial = unquote(parts.netloc + parts.path) or None
        return TargetURL("adb", serial=serial)
    if parts.scheme == "ssh":
        if not parts.hostname:
            raise UserInputError(f"target {url!r} has no host; expected ssh://[user@]host[:port]")
        try:
            port = parts.port
        except ValueError:
            raise UserInputError(f"target {url!r} has an invalid port") from None
        if parts.password:
            raise UserInputError("passwords are not supported in ssh targets: use key-based authentication")
        query = parse_qs(parts.query, keep_blank_values=False)
        unknown = set(query) - {"identity_file", "option"}
        if unknown:
            raise UserInputError(f"target {url!r}: unknown parameter(s) {sorted(unknown)} (use identity_file, option)")
        options: list[str] = []
        for opt in query.get("option", []):
            options += ["-o", opt]
        identity = query.get("identity_file", [None])[-1]
        return TargetURL("ssh", host=parts.hostname, user=unquote(parts.username) if parts.username else None,
                         port=port, identity_file=identity, options=tuple(options))
    raise UserInputError(f"unsupported target {url!r}; expected {URL_FORMS}")


def open_transport(
    url: str,
    *,
    python: str | None = None,
    workdir: str | None = None,
    ssh_options: Sequence[str] = (),
    identity_file: str | None = None,
    connect_timeout: float = 10.0,
) -> Transport:
    """A transport for `url`. python/workdir default per kind (local: this interpreter and a temp dir)."""
    target = parse_target(url)
    if target.kind == "local":
        return LocalTransport(python=python, workdir=workdir)
    if target.kind == "ssh":
        return SshTransport(
            target.host,
            user=target.user,
            port=target.port,
            python=python or "python3",
            workdir=workdir or "/tmp/edgecomp",
            identity_file=identity_file or target.identity_file,
            options=[*target.options, *ssh_options],
            connect_timeout=connect_timeout,
        )
    return AdbTransport(target.serial, python=python or "python3", workdir=workdir or "/data/local/tmp/edgecomp")


def split_options(text: str | None) -> list[str]:
    """Shell-split a string of extra ssh arguments ('-o A=b -o C=d')."""
    return shlex.split(text) if text else []


__all__ = [
    "AdbTransport",
    "Completed",
    "LocalTransport",
    "SshTransport",
    "TargetURL",
    "Transport",
    "open_transport",
    "parse_target",
    "sha256_file",
    "split_options",
]
