"""The project's reference model: a small BatchNorm CNN for 28x28 single-channel images (Fashion-MNIST).

Input: (N, 1, 28, 28) pixels in [0, 1]; the model normalises them itself (fixed Fashion-MNIST
mean/std). Four 3x3 conv-BN-ReLU blocks (32, 64, 128, 128 channels; max-pools after the 2nd and
3rd), global average pool, then Linear(128->256)-ReLU-Dropout-Linear(256->classes).

The three wide 3x3 convolutions (32->64, 64->128, 128->128) and the two Linear layers are the
decomposable layers; they hold >99% of the MACs, so low-rank factorisation has real work to do.
About 277k parameters and 36 M MACs per image.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecomp.models.zoo.common import FMNIST_MEAN, FMNIST_STD, Normalize, init_conv_bn, seeded


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 'same' conv (no bias: BatchNorm follows) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FmnistCNN(nn.Module):
    input_shape = (1, 1, 28, 28)

    def __init__(self, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
        self.features = nn.Sequential(
            conv_bn_relu(1, 32),  # 28x28
            conv_bn_relu(32, 64),
            nn.MaxPool2d(2),  # -> 14x14
            conv_bn_relu(64, 128),
            nn.MaxPool2d(2),  # -> 7x7
            conv_bn_relu(128, 128),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(256, num_classes),
        )
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(self.normalize(x))))


def fmnist_cnn(num_classes: int = 10, *, dropout: float = 0.3, seed: int | None = 0) -> FmnistCNN:
    """The reference Fashion-MNIST CNN (input 1x1x28x28 in [0, 1])."""
    with seeded(seed):
        return FmnistCNN(num_classes=num_classes, dropout=dropout)
