"""Data parallelism across processes (torchrun): one process group, chosen once and passed down as `Dist`.

    torchrun --nproc-per-node N --no-python edgecomp compress ...

The CLI entry (edgecomp.cli.main) calls `run_distributed`, which initialises the process group from
torchrun's environment (gloo on CPU, nccl on CUDA), runs the command, makes every rank exit with the
same code and destroys the group. A single process is world 1 without any process group; every
helper here is then the identity. How each stage uses it: docs/scale.md, "Many processes (torchrun)".
"""

from edgecomp.distributed.channel import LeaderFailed, broadcast_object
from edgecomp.distributed.collectives import (
    all_reduce_max_int,
    all_reduce_sum,
    average_buffers,
    broadcast_array,
    broadcast_parameters,
    broadcast_tensors,
    sum_gradients,
)
from edgecomp.distributed.group import Dist, current, init, shutdown
from edgecomp.distributed.entry import run_distributed
from edgecomp.distributed.shards import shard_chunks, shard_indices
from edgecomp.distributed.waiting import main_only, wait_for_main

__all__ = ["Dist", "LeaderFailed", "all_reduce_max_int", "all_reduce_sum", "average_buffers", "broadcast_array",
           "broadcast_object", "broadcast_parameters", "broadcast_tensors", "current", "init", "main_only", "run_distributed",
           "shard_chunks", "shard_indices", "shutdown", "sum_gradients", "wait_for_main"]
