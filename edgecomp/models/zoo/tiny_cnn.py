"""A very small CNN for 28x28 single-channel input, sized for fast tests (3,818 parameters).

Normalize -> conv3x3(1->8)-ReLU-maxpool -> conv3x3(8->16)-ReLU-maxpool -> 4x4 average pool
-> Linear(256->classes). The 8->16 conv (a 16x72 matrix) and the Linear (10x256) are decomposable.
The 4x4 adaptive pool over a 7x7 map (windows that overlap and differ in size) is deliberate: it
exercises exporters on an AdaptiveAvgPool2d whose output size does not divide its input.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecomp.models.zoo.common import FMNIST_MEAN, FMNIST_STD, Normalize, seeded


class TinyCNN(nn.Module):
    input_shape = (1, 1, 28, 28)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(self.normalize(x))))  # 14x14
        x = self.pool(self.relu(self.conv2(x)))  # 7x7
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_cnn(num_classes: int = 10, *, seed: int | None = 0) -> TinyCNN:
    """Two 3x3 convs and one Linear; for fast tests (input 1x1x28x28 in [0, 1])."""
    with seeded(seed):
        return TinyCNN(num_classes=num_classes)
