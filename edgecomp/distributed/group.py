"""The process group of this run, initialised once; `Dist` is the value the stages receive.

Backend: gloo on CPU, nccl on CUDA (EDGECOMP_DIST_BACKEND overrides). With nccl the default group is
"cpu:gloo,cuda:nccl", so CPU tensors still reduce over gloo, and each process uses cuda:LOCAL_RANK.
Besides the default group there is one gloo group for control messages (objects, exit codes), so
they never need a GPU. Collective timeout: EDGECOMP_DIST_TIMEOUT_S (default 1800 s); waits for rank 0
use the store with their own, longer timeout (edgecomp.distributed.waiting).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from edgecomp.distributed.env import launch_env
from edgecomp.errors import EdgecompError


class DistributedUnavailableError(EdgecompError):
    """torch.distributed (or the chosen backend) is not available in this PyTorch build."""


@dataclass(frozen=True)
class Dist:
    """rank of world_size processes; backend None for a single process (no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when there is more than one process to talk to."""
        return self.world_size > 1

    def describe(self, torch_device: str | None = None) -> dict:
        """What report.json records about the processes of this run."""
        return {"world_size": self.world_size, "backend": self.backend, "torch_device": torch_device}


SINGLE = Dist()
_current: Dist | None = None
_control = None  # gloo group for control messages; None = the default group
_owned = False  # True when init() created the default group (and shutdown() destroys it)


def timeout_s() -> float:
    return float(os.environ.get("EDGECOMP_DIST_TIMEOUT_S", "1800"))


def choose_backend() -> str:
    chosen = os.environ.get("EDGECOMP_DIST_BACKEND")
    if chosen:
        return chosen
    return "nccl" if torch.cuda.is_available() else "gloo"


def init() -> Dist:
    """Initialise the process group from torchrun's environment (once; later calls return the same Dist).

    Outside a launcher, or with WORLD_SIZE 1, this is world 1 with no process group."""
    global _current, _control, _owned
    if _current is not None:
        return _current
    env = launch_env()
    if env is None or env.world_size == 1:
        _current = SINGLE if env is None else Dist(env.rank, 1, env.local_rank, None)
        return _current
    if not tdist.is_available():
        raise DistributedUnavailableError("this PyTorch build has no torch.distributed: run without torchrun")
    backend = choose_backend()
    if backend == "gloo" and not tdist.is_gloo_available():
        raise DistributedUnavailableError("this PyTorch build has no gloo backend; set EDGECOMP_DIST_BACKEND")
    if backend == "nccl":
        if not tdist.is_nccl_available():
            raise DistributedUnavailableError("this PyTorch build has no nccl: set EDGECOMP_DIST_BACKEND=gloo")
        torch.cuda.set_device(env.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s())
    if not tdist.is_initialized():
        _owned = True
        tdist.init_process_group(backend="cpu:gloo,cuda:nccl" if backend == "nccl" else backend, timeout=timeout)
    _control = tdist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    _current = Dist(tdist.get_rank(), tdist.get_world_size(), env.local_rank, backend)
    return _current


def current() -> Dist:
    """The Dist of this process: init()'s, else a default group someone else initialised, else world 1."""
    global _current
    if _current is not None:
        return _current
    if tdist.is_available() and tdist.is_initialized():
        env = launch_env()
        _current = Dist(tdist.get_rank(), tdist.get_world_size(), env.local_rank if env else 0,
                        str(tdist.get_backend()))
        return _current
    return SINGLE


def control_group():
    """The gloo group for control messages (None: the default group, itself gloo)."""
    return _control


def store():
    """The rendezvous key-value store of the default group."""
    return tdist.distributed_c10d._get_default_store()


def shutdown() -> None:
    """Destroy the process group (if this module created one) and forget the Dist."""
    global _current, _control, _owned
    if _owned and tdist.is_initialized():
        tdist.destroy_process_group()
    elif _control is not None:
        tdist.destroy_process_group(_control)
    _current, _control, _owned = None, None, False
