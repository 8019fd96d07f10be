"""Work that only rank 0 does: writes (main_only) and rank-0-alone phases the others sit out without
using CPU (wait_for_main), e.g. latency measurement, which other busy processes would disturb.

Why not torch.distributed.barrier: with gloo on CPU it does block without spinning (measured with
torch 2.13: a rank waiting 3 s in barrier used 6 ms of CPU), but with nccl a barrier is a GPU
all-reduce followed by a synchronisation, which by default spins a CPU core, and either way it is
bounded by the collective timeout. A store wait is a blocking socket read on every backend, with its
own timeout (EDGECOMP_DIST_WAIT_S, edgecomp.distributed.channel).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from edgecomp.distributed.channel import LeaderFailed, exit_code_of, wait_timeout
from edgecomp.distributed.group import Dist, current, store

T = TypeVar("T")
_sequence = 0


def main_only(fn: Callable[..., T], *args, dist: Dist | None = None, **kwargs) -> T | None:
    """fn(*args, **kwargs) on rank 0 (its result), nothing on the other ranks (None): for writes."""
    dist = dist or current()
    return fn(*args, **kwargs) if dist.is_main else None


def wait_for_main(fn: Callable[[], T], dist: Dist | None = None) -> T | None:
    """Rank 0 runs fn() while the other ranks block in a store wait (no CPU) until it is done; returns
    fn()'s result on rank 0, None elsewhere. When fn raises on rank 0, the others raise LeaderFailed
    with its exit code. Every rank must call it at the same point (it is a collective)."""
    global _sequence
    dist = dist or current()
    if not dist.active:
        return fn()
    _sequence += 1
    key = f"edgecomp/wait/{_sequence}"
    if not dist.is_main:
        store().wait([key], wait_timeout())
        code = int(store().get(key))
        if code:
            raise LeaderFailed(code)
        return None
    try:
        result = fn()
    except BaseException as exc:
        store().set(key, str(exit_code_of(exc)))
        raise
    store().set(key, "0")
    return result
