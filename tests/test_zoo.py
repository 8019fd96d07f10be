"""The zoo architectures: exact torchvision parameter counts, state-dict naming, forward shapes."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from edgecomp.errors import UserInputError
from edgecomp.models import ZOO, ZooEntry, get_zoo_model, list_zoo
from edgecomp.models.zoo.common import FMNIST_MEAN, FMNIST_STD, Normalize

TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vgg16": 138_357_544,
    "squeezenet1_1": 1_235_496,
    "mobilenet_v2": 3_504_872,
}

# Key names, shapes and state-dict sizes as torchvision's models produce them.
TORCHVISION_KEYS = {
    "resnet18": (122, {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.num_batches_tracked": (),
        "layer4.1.bn2.bias": (512,),
        "fc.weight": (1000, 512),
    }),
    "resnet50": (320, {
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer3.5.conv2.weight": (256, 256, 3, 3),
        "layer4.0.conv2.weight": (512, 512, 3, 3),
        "fc.weight": (1000, 2048),
    }),
    "vgg16": (32, {
        "features.0.weight": (64, 3, 3, 3),
        "features.28.weight": (512, 512, 3, 3),
        "classifier.0.weight": (4096, 25088),
        "classifier.3.weight": (4096, 4096),
        "classifier.6.weight": (1000, 4096),
        "classifier.6.bias": (1000,),
    }),
    "squeezenet1_1": (52, {
        "features.0.weight": (64, 3, 3, 3),
        "features.3.squeeze.weight": (16, 64, 1, 1),
        "features.3.expand1x1.weight": (64, 16, 1, 1),
        "features.3.expand3x3.weight": (64, 16, 3, 3),
        "features.12.expand3x3.bias": (256,),
        "classifier.1.weight": (1000, 512, 1, 1),
    }),
    "mobilenet_v2": (314, {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_mean": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    }),
}


@functools.lru_cache(maxsize=None)
def built(name: str) -> nn.Module:
    """Each big model is built once per test session (VGG-16 init alone draws 138 M numbers)."""
    return get_zoo_model(name)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_and_keys_match_torchvision(name):
    model = built(name)
    assert n_params(model) == TORCHVISION_PARAMS[name]
    n_keys, spot = TORCHVISION_KEYS[name]
    state = model.state_dict()
    assert len(state) == n_keys
    for key, shape in spot.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize("name, batch", [("resnet18", 2), ("mobilenet_v2", 1)])
def test_imagenet_forward_shape(name, batch):
    model = get_zoo_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (batch, 1000)
    assert torch.isfinite(out).all()


def test_num_classes_changes_only_the_head():
    model = get_zoo_model("resnet18", num_classes=10)
    assert model.fc.weight.shape == (10, 512)
    assert n_params(model) == TORCHVISION_PARAMS["resnet18"] - 990 * 513
    assert get_zoo_model("squeezenet1_1", num_classes=7).classifier[1].weight.shape == (7, 512, 1, 1)


def test_init_follows_torchvision_rules():
    vgg_head = built("vgg16").classifier[6]
    assert torch.count_nonzero(vgg_head.bias) == 0
    assert abs(vgg_head.weight.std().item() - 0.01) < 1e-3  # N(0, 0.01^2)
    resnet = built("resnet18")
    assert torch.all(resnet.bn1.weight == 1) and torch.all(resnet.bn1.bias == 0)
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels * k * k))
    fan_out = 64 * 7 * 7
    assert abs(resnet.conv1.weight.std().item() - (2 / fan_out) ** 0.5) < 0.05 * (2 / fan_out) ** 0.5


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = get_zoo_model("fmnist_cnn")
    assert torch.equal(torch.rand(3), expected_next)
    b = get_zoo_model("fmnist_cnn")
    c = get_zoo_model("fmnist_cnn", seed=1)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.features[1][0].weight, c.features[1][0].weight)


@pytest.mark.parametrize("name", ["fmnist_cnn", "fmnist_resnet", "tiny_cnn", "mlp_fmnist"])
def test_small_models_forward_and_normalize_inside(name):
    entry = ZOO[name]
    assert entry.input_shape == (1, 1, 28, 28) and entry.num_classes == 10
    model = get_zoo_model(name).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 10)
    norm = model.normalize
    assert isinstance(norm, Normalize)
    # Fixed constants: buffers, not parameters, and not part of the saved weights.
    assert not any("normalize" in k for k, _ in model.named_parameters())
    assert not any(k.startswith("normalize") for k in model.state_dict())
    assert torch.allclose(norm(x), (x - FMNIST_MEAN) / FMNIST_STD)


def test_small_model_sizes_and_decomposable_layers():
    tiny = get_zoo_model("tiny_cnn")
    assert 1_000 <= n_params(tiny) <= 10_000
    assert sum(isinstance(m, nn.Conv2d) for m in tiny.modules()) == 2
    assert sum(isinstance(m, nn.Linear) for m in tiny.modules()) == 1

    cnn = get_zoo_model("fmnist_cnn")
    wide_3x3 = [m for m in cnn.modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and min(m.in_channels, m.out_channels) >= 32]
    assert len(wide_3x3) >= 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in cnn.modules()) == 4
    assert sum(isinstance(m, nn.Linear) for m in cnn.modules()) == 2

    resnet = get_zoo_model("fmnist_resnet")
    shortcuts = [m for m in resnet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(shortcuts) == 2  # the two downsampling blocks; the first block's shortcut is the identity
    assert 150_000 <= n_params(resnet) <= 200_000

    mlp = get_zoo_model("mlp_fmnist")
    assert [(m.in_features, m.out_features) for m in mlp.modules() if isinstance(m, nn.Linear)] == [
        (784, 256), (256, 128), (128, 10)]
    assert not any(isinstance(m, nn.Conv2d) for m in mlp.modules())


def test_registry():
    entries = list_zoo()
    assert [e.name for e in entries] == list(ZOO)
    assert set(TORCHVISION_PARAMS) | {"fmnist_cnn", "fmnist_resnet", "tiny_cnn", "mlp_fmnist"} == set(ZOO)
    for entry in entries:
        assert isinstance(entry, ZooEntry) and entry.description
        assert entry.input_shape[0] == 1 and len(entry.input_shape) == 4
    with pytest.raises(Exception):
        entries[0].name = "x"  # frozen


def test_unknown_name_lists_available():
    with pytest.raises(UserInputError) as info:
        get_zoo_model("resnet19")
    assert "resnet18" in str(info.value) and "mobilenet_v2" in str(info.value)
    with pytest.raises(UserInputError, match="bad arguments"):
        get_zoo_model("tiny_cnn", width=3)
