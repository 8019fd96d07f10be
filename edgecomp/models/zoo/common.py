"""Pieces shared by the zoo architectures: seeded initialisation and in-model input normalisation."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

# Fashion-MNIST training-set statistics for pixels scaled to [0, 1].
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded to `seed`, restoring the caller's RNG afterwards.

    Building a model inside `seeded(s)` gives bit-identical weights for the same `s` without
    disturbing the global random stream. `seed=None` uses (and advances) the global RNG.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Normalize(nn.Module):
    """y = (x - mean) / std with fixed per-channel constants (non-trainable, not in the state dict).

    The zoo's small models take pixels in [0, 1] and normalise them themselves, so exported
    models and the accuracy harness need no separate preprocessing step.
    """

    def __init__(self, mean: float | tuple[float, ...], std: float | tuple[float, ...]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape != std_t.shape:
            raise ValueError("mean and std must have the same number of channels")
        if torch.any(std_t <= 0):
            raise ValueError("std must be positive")
        # Non-persistent: they are part of the architecture, not learned weights.
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def init_conv_bn(model: nn.Module) -> None:
    """He (fan-out, ReLU) initialisation of every Conv2d weight; BatchNorm scale 1 and shift 0 (the ResNet
    recipe, He et al. 2015/2016). Modules are visited in `model.modules()` order, so a seeded build draws
    the same weights every time."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
