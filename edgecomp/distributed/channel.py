"""Ordered messages from rank 0 to the other ranks, and what a rank 0 failure looks like to them.

Every message rings a doorbell first: rank 0 sets the store key edgecomp/msg/<n>, the others block
in store.wait on it (a socket read: no CPU used, and its timeout is EDGECOMP_DIST_WAIT_S, default
one day, not the collective timeout), then the object itself goes out by a gloo broadcast. So the
other ranks can wait for rank 0 for as long as it works alone (warm starts, latency measurements).
When rank 0 fails it rings with "abort <exit code>" and sends nothing (so it never blocks on ranks
that already left), and a waiting rank raises LeaderFailed with that exit code, so all ranks end
with rank 0's code.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch.distributed as tdist

from edgecomp.distributed.group import Dist, control_group, current, store
from edgecomp.errors import EdgecompError


class LeaderFailed(EdgecompError):
    """Rank 0 failed (its own error says why); this rank stops with the same exit code."""

    def __init__(self, exit_code: int):
        super().__init__(f"rank 0 failed with exit code {exit_code} (its error above says why); this rank stops too")
        self.exit_code = exit_code


@dataclass(frozen=True)
class Abort:
    exit_code: int


_sequence = 0
_busy = False  # rank 0 between an evaluation request and the end of its collective
_aborted = False


def wait_timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("EDGECOMP_DIST_WAIT_S", str(24 * 3600))))


def _doorbell() -> str:
    global _sequence
    _sequence += 1
    return f"edgecomp/msg/{_sequence}"


def broadcast_object(obj: Any, dist: Dist | None = None) -> Any:
    """Rank 0's `obj` (any picklable value) on every rank; the others pass anything (ignored).
    A rank other than 0 raises LeaderFailed when rank 0 sent abort() instead."""
    dist = dist or current()
    if not dist.active:
        return obj
    key = _doorbell()
    if dist.is_main:
        if isinstance(obj, Abort):  # through the store alone: rank 0 never blocks on ranks that left
            store().set(key, f"abort {obj.exit_code}")
            return obj
        store().set(key, b"message")
    else:
        store().wait([key], wait_timeout())
        ring = store().get(key).decode()
        if ring.startswith("abort "):
            raise LeaderFailed(int(ring.split()[1]))
    box = [obj if dist.is_main else None]
    tdist.broadcast_object_list(box, src=0, group=control_group())
    return box[0]


@contextlib.contextmanager
def collective():
    """Rank 0: mark a request and the collective that answers it. An exception inside leaves the channel
    busy: the others are then blocked in that collective, not waiting for a message, and abort() stays
    silent (rank 0's exit makes torchrun stop them)."""
    global _busy
    _busy = True
    yield
    _busy = False


def abort(exit_code: int, dist: Dist | None = None) -> None:
    """Rank 0: tell the ranks waiting in broadcast_object that it failed with `exit_code` (once; not
    from inside a collective, see collective())."""
    global _aborted
    dist = dist or current()
    if not dist.active or not dist.is_main or _busy or _aborted:
        return
    _aborted = True
    broadcast_object(Abort(int(exit_code)), dist)


def exit_code_of(exc: BaseException) -> int:
    """The exit code an exception ends the command with (edgecomp.exit_codes)."""
    from edgecomp.exit_codes import ExitCode

    if isinstance(exc, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED)
    code = getattr(exc, "exit_code", None)
    return int(code) if isinstance(code, int) else int(ExitCode.INTERNAL_ERROR)
