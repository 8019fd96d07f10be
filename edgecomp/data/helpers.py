"""Seeded subsets, splits, loaders and batches of an EdgeDataset (same seed -> same samples)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.utils.data import DataLoader

from edgecomp.data.dataset import EdgeDataset, SubsetDataset
from edgecomp.errors import UserInputError


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def _count(ds: EdgeDataset, n_or_fraction: int | float) -> int:
    """An int is a sample count; a float in (0, 1] a fraction of len(ds)."""
    if isinstance(n_or_fraction, bool):
        raise UserInputError(f"subset size must be a count or a fraction, got {n_or_fraction!r}")
    if isinstance(n_or_fraction, float):
        if not 0.0 < n_or_fraction <= 1.0:
            raise UserInputError(f"subset fraction must be in (0, 1], got {n_or_fraction}")
        return max(1, round(n_or_fraction * len(ds)))
    n = int(n_or_fraction)
    if n < 1:
        raise UserInputError(f"subset size must be >= 1, got {n}")
    if n > len(ds):
        raise UserInputError(f"asked for {n} samples but {ds.name} has only {len(ds)}")
    return n


def subset(ds: EdgeDataset, n_or_fraction: int | float, seed: int = 0) -> EdgeDataset:
    """A seeded random subset (indices kept in dataset order)."""
    n = _count(ds, n_or_fraction)
    if n == len(ds):
        return ds
    indices = torch.randperm(len(ds), generator=_generator(seed))[:n].sort().values
    return SubsetDataset(ds, indices, name=f"{ds.name}[{n}/{len(ds)}]")


def split(ds: EdgeDataset, fractions: Sequence[float], seed: int = 0) -> list[EdgeDataset]:
    """Disjoint seeded parts with sizes floor(f_i * N); when the fractions sum to 1 the last part
    takes the rounding remainder so that every sample is used."""
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise UserInputError(f"split fractions must each be in (0, 1], got {fractions}")
    total = sum(fractions)
    if total > 1.0 + 1e-9:
        raise UserInputError(f"split fractions sum to {total:g} > 1")
    sizes = [math.floor(f * len(ds)) for f in fractions]
    if math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-9):
        sizes[-1] = len(ds) - sum(sizes[:-1])
    if any(size == 0 for size in sizes):
        raise UserInputError(f"split {fractions} of {len(ds)} samples leaves an empty part")
    order = torch.randperm(len(ds), generator=_generator(seed))
    parts, start = [], 0
    for i, size in enumerate(sizes):
        indices = order[start : start + size].sort().values
        parts.append(SubsetDataset(ds, indices, name=f"{ds.name}[split {i}]"))
        start += size
    return parts


def make_loader(ds: EdgeDataset, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose shuffling order (and its workers' seeds) depend only on `seed`; `workers`
    processes load batches (0: in this process), pin_memory for fast copies to a CUDA device."""
    if batch_size < 1:
        raise UserInputError(f"batch size must be >= 1, got {batch_size}")
    if workers < 0:
        raise UserInputError(f"workers must be >= 0, got {workers}")
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=_generator(seed), num_workers=workers,
        drop_last=drop_last, pin_memory=pin_memory,
    )


def take_batch(ds: EdgeDataset, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """min(n, len(ds)) seeded random samples stacked: x (n, *sample_shape) float32, y (n,) int64."""
    if n < 1:
        raise UserInputError(f"batch size must be >= 1, got {n}")
    n = min(int(n), len(ds))
    indices = torch.randperm(len(ds), generator=_generator(seed))[:n].sort().values
    return ds.get_batch(indices)
