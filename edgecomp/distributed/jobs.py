"""Commands whose rank 0 works alone most of the time (`edgecomp export`: stage files, conversion,
latency measurement on the target) and hands the other ranks only the parallel work (each round's
compression): `lead` runs the command on rank 0, `follow` is the other ranks' loop.

While rank 0 works alone the others wait for its next message without using CPU (a store wait,
edgecomp.distributed.channel), so they do not disturb a latency measurement on this host. Inside
`lead`, share_job(fn, *args) sends fn(*args) (fn a module-level function, args picklable) to the
other ranks, which run it and wait for the next job; outside `lead` it does nothing (under
`edgecomp compress` every rank already runs the same code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgecomp.distributed.channel import abort, broadcast_object, exit_code_of
from edgecomp.distributed.group import Dist, current


@dataclass(frozen=True)
class Job:
    fn: Callable
    args: tuple


@dataclass(frozen=True)
class Done:
    result: Any


_leading = False


def lead(command: Callable[[], Any], dist: Dist | None = None) -> Any:
    """Rank 0: run command(); its result goes to every follower; on failure they stop with its exit code."""
    global _leading
    dist = dist or current()
    if not dist.active:
        return command()
    _leading = True
    try:
        result = command()
    except BaseException as exc:
        abort(exit_code_of(exc), dist)
        raise
    finally:
        _leading = False
    return broadcast_object(Done(result), dist).result


def follow(dist: Dist | None = None) -> Any:
    """The other ranks: run rank 0's jobs until it is done; returns its command's result."""
    dist = dist or current()
    while True:
        message = broadcast_object(None, dist)
        if isinstance(message, Done):
            return message.result
        message.fn(*message.args)


def share_job(fn: Callable, *args) -> None:
    """Inside lead(): have the other ranks run fn(*args) now (rank 0 runs its own part itself)."""
    dist = current()
    if _leading and dist.active and dist.is_main:
        broadcast_object(Job(fn, args), dist)
