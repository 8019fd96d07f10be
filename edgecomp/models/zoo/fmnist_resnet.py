"""A small residual CNN for 28x28 single-channel images (Fashion-MNIST), the second benchmark shape.

Input: (N, 1, 28, 28) pixels in [0, 1], normalised inside the model. A 3x3 stem (1 -> 24), then three
stages of one ResNet basic block each (He et al. 2016: two 3x3 conv-BN with an identity or 1x1-conv
shortcut): 24 channels at 28x28, 48 at 14x14 and 96 at 7x7 (stride 2 in the first conv of the last
two blocks), global average pool and Linear(96 -> classes). About 21 M MACs and 170 k parameters.

Unlike the plain reference CNN, every block's output is the sum of two paths, so a rank chosen for one
conv interacts with the shortcut: a different shape of problem for rank selection.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecomp.models.zoo.common import FMNIST_MEAN, FMNIST_STD, Normalize, init_conv_bn, seeded


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut = 1x1 conv-BN when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class FmnistResNet(nn.Module):
    input_shape = (1, 1, 28, 28)

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (24, 48, 96)):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(w1, w1)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def fmnist_resnet(num_classes: int = 10, *, seed: int | None = 0) -> FmnistResNet:
    """The residual Fashion-MNIST benchmark CNN (input 1x1x28x28 in [0, 1])."""
    with seeded(seed):
        return FmnistResNet(num_classes=num_classes)
