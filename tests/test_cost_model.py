"""The cost model reproduces the well-known MAC/parameter figures of the reference architectures."""

import json

import pytest
from click.testing import CliRunner
from torch import nn

from edgecomp.cli import main
from edgecomp.graph import analyze_model, trace_layers
from edgecomp.models import get_zoo_model

# (GMACs, M params) at 1x3x224x224: torchvision's published figures.
KNOWN = {
    "resnet18": (1.814, 11.69),
    "resnet50": (4.09, 25.56),
    "vgg16": (15.47, 138.4),
    "mobilenet_v2": (0.30, 3.50),
    "squeezenet1_1": (0.35, 1.24),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_zoo_costs_match_published_figures(name):
    gmacs, mparams = KNOWN[name]
    cost = analyze_model(get_zoo_model(name), (1, 3, 224, 224))
    assert cost.total_macs / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert cost.total_params / 1e6 == pytest.approx(mparams, rel=0.01)


def test_mobilenet_depthwise_layers_are_left_alone():
    cost = analyze_model(get_zoo_model("mobilenet_v2"), (1, 3, 224, 224))
    depthwise = [lc for lc in cost.layers if lc.layer.groups > 1]
    assert len(depthwise) == 17
    assert all(lc.decomposition is None and "depthwise" in lc.skip_reason for lc in depthwise)


def test_trace_records_shapes_and_hyperparameters():
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2, dilation=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4))
    layers = trace_layers(net, (2, 3, 32, 32))
    conv, fc = layers
    assert conv.in_shape == (3, 32, 32) and conv.out_shape == (8, 16, 16)
    assert conv.stride == (2, 2) and conv.padding == (2, 2) and conv.kernel_size == (5, 5)
    assert conv.macs == 16 * 16 * 8 * 3 * 25  # per sample, batch excluded
    assert fc.macs == 8 * 16 * 16 * 4


def test_shared_module_counts_every_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            return self.fc(self.fc(x))

    (layer,) = trace_layers(Twice(), (1, 6))
    assert len(layer.calls) == 2 and layer.macs == 72


def test_wrong_input_shape_is_a_clear_error():
    from edgecomp.errors import UserInputError

    with pytest.raises(UserInputError, match="input-shape"):
        trace_layers(get_zoo_model("tiny_cnn"), (1, 3, 224, 224))


def test_inspect_cli_json_totals_for_resnet18():
    result = CliRunner().invoke(main, ["inspect", "zoo:resnet18", "--input-shape", "1,3,224,224", "--json", "--no-spectrum"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["totals"]["macs"] == pytest.approx(1.814e9, rel=0.001)
    assert report["totals"]["params"] == 11_689_512
    assert len(report["layers"]) == 21
    assert all(row["break_even_rank"] <= row["max_rank"] + 1 for row in report["layers"])


def test_inspect_cli_human_table_with_device_and_spectrum():
    result = CliRunner().invoke(main, ["inspect", "zoo:tiny_cnn", "--device", "jetson"])
    assert result.exit_code == 0, result.output
    assert "total:" in result.output and "device jetson-orin-nano" in result.output


def test_inspect_cli_bad_input_shape_exit_code_2():
    result = CliRunner().invoke(main, ["inspect", "zoo:tiny_cnn", "--input-shape", "1,x,28"])
    assert result.exit_code == 2
    assert "input-shape" in result.output
