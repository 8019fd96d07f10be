"""A Linear-only classifier for 28x28 single-channel input: Normalize, flatten, 784-256-128-classes MLP."""

from __future__ import annotations

import torch
from torch import nn

from edgecomp.models.zoo.common import FMNIST_MEAN, FMNIST_STD, Normalize, seeded


class MLP(nn.Module):
    input_shape = (1, 1, 28, 28)

    def __init__(self, num_classes: int = 10, hidden: tuple[int, int] = (256, 128)):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(28 * 28, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.normalize(x))
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def mlp_fmnist(num_classes: int = 10, *, seed: int | None = 0) -> MLP:
    """Linear 784->256->128->classes with ReLU (235,146 parameters at 10 classes)."""
    with seeded(seed):
        return MLP(num_classes=num_classes)
