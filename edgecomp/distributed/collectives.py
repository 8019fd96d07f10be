"""Sums over ranks and broadcasts from rank 0; with world 1 each is the identity (no process group).

All-reduce results are bitwise identical on every rank (gloo's and nccl's ring all-reduce reduce each
chunk once and send the result around), so replicated state computed from them cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as tdist

from edgecomp.distributed.group import Dist, control_group, current


def _group_for(tensor: torch.Tensor):
    return None if tensor.is_cuda else control_group()


def all_reduce_sum(value, dist: Dist | None = None):
    """Sum of `value` over all ranks.

    torch.Tensor: reduced in place on its own device (CUDA tensors over nccl, CPU ones over gloo) and
    returned; np.ndarray: a new float64 array; float/int: a float (summed in float64)."""
    dist = dist or current()
    if isinstance(value, torch.Tensor):
        if dist.active:
            tdist.all_reduce(value, op=tdist.ReduceOp.SUM, group=_group_for(value))
        return value
    if isinstance(value, np.ndarray):
        out = torch.from_numpy(np.array(value, dtype=np.float64, copy=True))
        if dist.active:
            tdist.all_reduce(out, op=tdist.ReduceOp.SUM, group=control_group())
        return out.numpy()
    return float(all_reduce_sum(np.array([float(value)]), dist)[0])


def all_reduce_max_int(value: int, dist: Dist | None = None) -> int:
    """The largest of the ranks' integers."""
    dist = dist or current()
    if not dist.active:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=control_group())
    return int(t.item())


def broadcast_array(array: np.ndarray | None, dist: Dist | None = None) -> np.ndarray:
    """Rank 0's numpy array on every rank (shape and dtype too; other ranks may pass None)."""
    dist = dist or current()
    if not dist.active:
        return np.asarray(array)
    from edgecomp.distributed.channel import broadcast_object

    if dist.is_main:
        array = np.ascontiguousarray(array)
        header = (array.shape, array.dtype.str)
    shape, dtype = broadcast_object(header if dist.is_main else None, dist)
    out = torch.from_numpy(array.copy()) if dist.is_main else torch.empty(shape, dtype=_torch_dtype(dtype))
    if out.numel():
        tdist.broadcast(out.view(-1), src=0, group=control_group())
    return out.numpy().astype(np.dtype(dtype), copy=False)


def _torch_dtype(dtype: str) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype


def broadcast_parameters(module: torch.nn.Module, dist: Dist | None = None) -> None:
    """Overwrite every parameter and buffer of `module` with rank 0's (e.g. after a C step of LC)."""
    broadcast_tensors([*module.parameters(), *module.buffers()], dist)


def broadcast_tensors(tensors, dist: Dist | None = None) -> None:
    """Overwrite each tensor (contiguous; the same shapes, in the same order, on every rank) with rank 0's."""
    dist = dist or current()
    if not dist.active:
        return
    with torch.no_grad():
        for t in tensors:
            tdist.broadcast(t.data, src=0, group=_group_for(t))


def sum_gradients(module: torch.nn.Module, dist: Dist | None = None,
                  extra: torch.Tensor | None = None) -> torch.Tensor | None:
    """Replace each parameter's .grad by its sum over ranks (a missing .grad counts as zeros), in one
    flat all-reduce per device. With each rank's loss = (its shard's summed loss) / (global batch
    size), the result is exactly the gradient of the global batch's mean loss.

    extra (e.g. the rank's share of the loss, a 0-dim tensor): summed over ranks in the same
    all-reduce, returned detached (so every rank sees the global loss at no extra round trip); with
    world 1 it comes back as it is (detached) and nothing else happens."""
    dist = dist or current()
    extra = None if extra is None else extra.detach()
    if not dist.active:
        return extra
    params = [p for p in module.parameters() if p.requires_grad]
    by_device: dict[torch.device, list] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_device.setdefault(p.grad.device, []).append(p)
    if extra is not None:
        by_device.setdefault(extra.device, [])
    summed_extra = None
    for device, group in by_device.items():
        parts = [p.grad.reshape(-1).to(torch.float64) for p in group]
        with_extra = extra is not None and device == extra.device
        if with_extra:
            parts.append(extra.reshape(-1).to(torch.float64))
        flat = torch.cat(parts)
        all_reduce_sum(flat, dist)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
        if with_extra:
            summed_extra = flat[offset:].view_as(extra).to(extra.dtype)
    return summed_extra


def average_buffers(module: torch.nn.Module, dist: Dist | None = None) -> None:
    """Average floating-point buffers (BatchNorm running mean/var) over ranks, e.g. before evaluating or
    saving a model trained with per-shard BatchNorm statistics."""
    dist = dist or current()
    if not dist.active:
        return
    with torch.no_grad():
        for b in module.buffers():
            if b.is_floating_point():
                all_reduce_sum(b.data, dist).div_(dist.world_size)
