"""Reference architectures defined in this project (no torchvision), and their registry.

The ImageNet models reproduce torchvision's module layout exactly, so a torchvision weight file
(`resnet18-*.pth` etc.) loads into them with `edgecomp.models.load_weights`. The 28x28 models take
pixels in [0, 1] and normalise their input themselves.

Every factory takes `num_classes` and a keyword `seed` (default 0): the same seed gives
bit-identical initial weights, without touching torch's global RNG; `seed=None` draws from it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.models.zoo.fmnist_cnn import fmnist_cnn
from edgecomp.models.zoo.fmnist_resnet import fmnist_resnet
from edgecomp.models.zoo.mlp_fmnist import mlp_fmnist
from edgecomp.models.zoo.mobilenet_v2 import mobilenet_v2
from edgecomp.models.zoo.resnet import resnet18, resnet50
from edgecomp.models.zoo.squeezenet import squeezenet1_1
from edgecomp.models.zoo.tiny_cnn import tiny_cnn
from edgecomp.models.zoo.vgg import vgg16


@dataclass(frozen=True)
class ZooEntry:
    """A named architecture: its factory, default input shape (batch 1 included) and class count."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    description: str


_IMAGENET = (1, 3, 224, 224)
_FMNIST = (1, 1, 28, 28)

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("resnet18", resnet18, _IMAGENET, 1000, "ResNet-18, torchvision layout (11.7 M params)"),
        ZooEntry("resnet50", resnet50, _IMAGENET, 1000, "ResNet-50, torchvision layout (25.6 M params)"),
        ZooEntry("vgg16", vgg16, _IMAGENET, 1000, "VGG-16 without BN, torchvision layout (138.4 M params)"),
        ZooEntry("squeezenet1_1", squeezenet1_1, _IMAGENET, 1000,
                 "SqueezeNet 1.1, torchvision layout (1.2 M params)"),
        ZooEntry("mobilenet_v2", mobilenet_v2, _IMAGENET, 1000,
                 "MobileNetV2 width 1.0, torchvision layout (3.5 M params)"),
        ZooEntry("fmnist_cnn", fmnist_cnn, _FMNIST, 10,
                 "Reference Fashion-MNIST CNN: 4 conv-BN-ReLU + 2 Linear (276 k params)"),
        ZooEntry("fmnist_resnet", fmnist_resnet, _FMNIST, 10,
                 "Residual Fashion-MNIST CNN: stem + 3 basic blocks (24/48/96 ch) + Linear (170 k params)"),
        ZooEntry("tiny_cnn", tiny_cnn, _FMNIST, 10, "Tiny 28x28 CNN for fast tests: 2 convs + Linear (3.8 k params)"),
        ZooEntry("mlp_fmnist", mlp_fmnist, _FMNIST, 10,
                 "Linear-only 784-256-128-10 MLP for 28x28 input (235 k params)"),
    ]
}


def list_zoo() -> list[ZooEntry]:
    """All registered architectures, in registry order."""
    return list(ZOO.values())


def get_entry(name: str) -> ZooEntry:
    """The registry entry for `name`; UserInputError listing the available names otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise UserInputError(f"unknown zoo model {name!r}; available: {', '.join(ZOO)}") from None


def get_zoo_model(name: str, **kwargs) -> nn.Module:
    """Build zoo model `name` (training mode, freshly initialised); kwargs go to its factory."""
    entry = get_entry(name)
    try:
        inspect.signature(entry.factory).bind(**kwargs)
    except TypeError as exc:
        raise UserInputError(f"zoo model {name!r}: bad arguments {sorted(kwargs)}: {exc}") from None
    return entry.factory(**kwargs)


__all__ = ["ZOO", "ZooEntry", "get_entry", "get_zoo_model", "list_zoo"]
