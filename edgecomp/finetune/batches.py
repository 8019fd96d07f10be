"""Seeded minibatches of a dataset: one epoch at a time, or an endless stream of epochs.

Every epoch's order is torch.randperm(n) drawn from the run's seeded generator (0..n-1 unshuffled),
whatever the dataset, so the batches depend only on the seed, and a resumed run reaches step s by
drawing the same permutations and skipping the batches before s without loading them.

Datasets held in memory (`in_memory`: ArrayDataset and its subsets, e.g. Fashion-MNIST, npz, image
folders) are batched with `get_batch`, one gather per batch (~10x faster than one __getitem__ per
sample). Any other dataset (a user's torch Dataset, a `module:callable`) goes through a
torch.utils.data.DataLoader over those same index batches, with `placement.workers` worker processes
and pinned memory on CUDA; its workers' seeds come from (seed, epoch), so random augmentation in a
user's dataset is reproducible for a given --workers count (0 keeps it on the run's own RNG).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.torch_device import Placement


def check_dataset(data, what: str = "training data") -> None:
    if isinstance(data, DataLoader):
        return
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise UserInputError(f"{what} must be a dataset (e.g. edgecomp.data.load_dataset), got {type(data).__name__}")
    if len(data) == 0:
        raise UserInputError(f"{what} is empty")


def steps_per_epoch(data, batch_size: int, drop_last: bool) -> int:
    if isinstance(data, DataLoader):
        return len(data)
    n = len(data)
    # A dataset smaller than one batch still gives one (full-dataset) batch.
    return max(1, n // batch_size) if drop_last else -(-n // batch_size)


def collate_pairs(items: list) -> tuple[torch.Tensor, object]:
    """(x, y) items stacked; targets that do not stack (detection boxes) stay a list for the user's loss."""
    xs = torch.stack([x for x, _ in items])
    ys = [y for _, y in items]
    try:
        return xs, torch.stack(ys)
    except (RuntimeError, TypeError):
        return xs, ys


def _loader(data, batches: list[list[int]], placement: Placement, seed: int) -> Iterator:
    """A DataLoader over fixed index batches; a worker's EdgecompError comes back as itself, one line."""
    edge = hasattr(data, "get_batch")  # an EdgeDataset: (x, y) items
    loader = DataLoader(data, batch_sampler=batches, num_workers=placement.workers, pin_memory=placement.pin_memory,
                        collate_fn=collate_pairs if edge else default_collate,
                        generator=torch.Generator().manual_seed(seed))
    try:
        yield from loader
    except EdgecompError as exc:  # re-raised by the DataLoader with the worker's traceback in its message
        lines = [line for line in str(exc).splitlines() if line.strip()]
        if len(lines) > 1 and "DataLoader worker" in lines[0]:
            message = lines[-1].split(": ", 1)[-1]
            try:
                clean = type(exc)(message)
            except TypeError:  # an error class with other constructor arguments
                clean = UserInputError(message)
            raise clean from None
        raise


def epoch_batches(
    data, batch_size: int, *, shuffle: bool, generator: torch.Generator, drop_last: bool = False,
    placement: Placement | None = None, skip: int = 0, epoch: int = 0, part: tuple[int, int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over `data` in batches of `batch_size`, leaving out its first `skip` batches.

    drop_last drops the final partial batch (training with BatchNorm: a batch of 1 has no batch
    statistics), but never the only batch of a dataset smaller than `batch_size`. The permutation is
    drawn from `generator` even when every batch is skipped, so later epochs stay the same.
    part=(rank, world_size): only this rank's share of each batch (sharded_batches).
    """
    for x, y, _ in sharded_batches(data, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                                   placement=placement, skip=skip, epoch=epoch, part=part):
        yield x, y


def sharded_batches(
    data, batch_size: int, *, shuffle: bool, generator: torch.Generator, drop_last: bool = False,
    placement: Placement | None = None, skip: int = 0, epoch: int = 0, part: tuple[int, int] | None = None,
) -> Iterator[tuple[torch.Tensor, object, int]]:
    """epoch_batches' batches as (x, y, global size): with part=(rank, world_size) each is this rank's
    share of the single-process batch, its samples shard_indices(batch, rank, world_size) (only those
    are loaded; a user's DataLoader batch is loaded whole and sliced the same way), so the shards of
    all ranks are exactly that batch, whose size is the third item. part=None: the whole batch."""
    if batch_size < 1:
        raise UserInputError(f"batch size must be >= 1, got {batch_size}")
    rank, world = part if part is not None else (0, 1)
    if isinstance(data, DataLoader):  # the user's own loader: its order is its business
        for i, (x, y) in enumerate(data):
            if i >= skip:
                yield _slice(x, rank, world), _slice(y, rank, world), len(x)
        return
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n > batch_size else n
    starts = range(0, stop, batch_size)[skip:]
    sizes = [min(stop, start + batch_size) - start for start in starts]
    # rank's share = shard_indices(batch, rank, world), kept a tensor (world 1: the very same batch)
    batches = [order[start : start + batch_size][rank::world] for start in starts]
    if getattr(data, "in_memory", False):
        for batch, size in zip(batches, sizes):
            x, y = data.get_batch(batch)
            yield x, y, size
        return
    if not starts:
        return
    placement = placement or Placement()
    seed = int(generator.initial_seed()) * 1_000_003 + epoch
    for (x, y), size in zip(_loader(data, [b.tolist() for b in batches], placement, seed % (2**63)), sizes):
        yield x, y, size


def _slice(value, rank: int, world: int):
    """Rank `rank`'s samples of a collated batch: value[rank::world] (tensors and lists)."""
    if world == 1 or not isinstance(value, (torch.Tensor, list)):
        return value
    return value[rank::world]


def batch_stream(
    data, batch_size: int, *, generator: torch.Generator, drop_last: bool = True,
    placement: Placement | None = None, start_step: int = 0, part: tuple[int, int] | None = None,
) -> Iterator[tuple[int, torch.Tensor, object, int]]:
    """Endless shuffled epochs: yields (epoch index, x, y, global batch size), from global step
    `start_step` on (a resumed run: the same batches as an uninterrupted one from there). With
    part=(rank, world_size), x and y are this rank's share of the batch (sharded_batches)."""
    per_epoch = steps_per_epoch(data, batch_size, drop_last)
    epoch, skip = 0, int(start_step)
    while True:
        empty = True
        this_skip = min(skip, per_epoch)
        for x, y, size in sharded_batches(data, batch_size, shuffle=True, generator=generator, drop_last=drop_last,
                                          placement=placement, skip=this_skip, epoch=epoch, part=part):
            empty = False
            yield epoch, x, y, size
        if empty and this_skip == 0:
            raise UserInputError("the training data yields no batches")
        skip -= this_skip
        epoch += 1


def subset(data, indices):
    """The samples `indices` of `data` as a dataset of the same kind (an EdgeDataset keeps get_batch and
    in_memory); a DataLoader is returned as it is (its batches are its own)."""
    if isinstance(data, DataLoader):
        return data
    from edgecomp.data import EdgeDataset, SubsetDataset

    if isinstance(data, EdgeDataset):
        return SubsetDataset(data, indices)
    from torch.utils.data import Subset

    return Subset(data, [int(i) for i in indices])
