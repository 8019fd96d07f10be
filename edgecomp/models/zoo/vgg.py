"""VGG-16 without batch norm (Simonyan & Zisserman, 2015, configuration D), as torchvision builds it.

State-dict keys match torchvision's `vgg16` (`features.0.weight` ... `features.28.weight`,
`classifier.0/3/6.weight`). Initialisation as torchvision: Kaiming-normal (fan_out, ReLU)
convolutions with zero bias, Linear weights ~ N(0, 0.01^2) with zero bias.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecomp.models.zoo.common import seeded

# Output channels of each 3x3 convolution; "M" is a 2x2/2 max-pool.
CFG_D: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def make_layers(cfg: list[int | str], in_channels: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Convolutional features, 7x7 adaptive average pool, 4096-4096-num_classes classifier."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def vgg16(num_classes: int = 1000, *, dropout: float = 0.5, seed: int | None = 0) -> VGG:
    """VGG-16 (13 convs + 3 fully connected); 138,357,544 parameters at 1000 classes."""
    with seeded(seed):
        return VGG(make_layers(CFG_D), num_classes=num_classes, dropout=dropout)
