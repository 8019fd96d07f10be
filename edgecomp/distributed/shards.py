"""Which part of a sample each rank evaluates; the shards of all ranks are disjoint and their union is
exactly the sample a single process would use (no padding, unlike torch's DistributedSampler,
whose padding repeats samples; the stride, rank r taking every world_size-th item from r, is its)."""

from __future__ import annotations

import numpy as np


def shard_indices(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s samples of `indices`: indices[rank::world_size] (sizes differ by at most one)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    return np.asarray(indices)[rank::world_size]


def shard_chunks(n: int, size: int, rank: int, world_size: int) -> list[tuple[int, int]]:
    """The [start, stop) chunks of a single process's batching of n items by `size` that rank `rank`
    evaluates: chunk k goes to rank k % world_size. Every batch is then the very batch one process
    would run, so per-batch results are bitwise the same and only the order of the final sum differs."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    starts = range(0, n, size)
    return [(s, min(n, s + size)) for k, s in enumerate(starts) if k % world_size == rank]
