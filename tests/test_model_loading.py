"""load_model / load_weights / save_weights: every spec form, both weight formats, and clear errors."""

from __future__ import annotations

import hashlib
import sys
import textwrap

import pytest
import torch
from torch import nn

from edgecomp.errors import UnsafeModelError, UserInputError
from edgecomp.models import LoadedModel, get_zoo_model, load_model, load_weights, read_state_dict, save_weights


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def write_py(tmp_path, name: str, body: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


USER_MODEL = """
    import torch
    from torch import nn

    class Net(nn.Module):
        input_shape = (1, 3, 8, 8)
        num_classes = 4

        def __init__(self, hidden: int = 6):
            super().__init__()
            self.conv = nn.Conv2d(3, hidden, 3)
            self.fc = nn.Linear(hidden, 4)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    def build():
        torch.manual_seed(0)
        return Net(hidden=5)

    def needs_args(width):
        return Net(width)

    def not_a_model():
        return 3

    class Plain:
        pass

    class Builders:
        @staticmethod
        def small():
            return Net(hidden=2)

    instance = Net()
    CONSTANT = 7
"""


@pytest.fixture
def user_file(tmp_path):
    return write_py(tmp_path, "user_model.py", USER_MODEL)


# ----------------------------------------------------------------------------- spec forms


def test_zoo_spec_and_bare_zoo_name():
    loaded = load_model("zoo:tiny_cnn")
    assert isinstance(loaded, LoadedModel)
    assert not loaded.module.training
    assert loaded.input_shape == (1, 1, 28, 28) and loaded.num_classes == 10
    assert loaded.spec == "zoo:tiny_cnn" and loaded.weights is None
    assert_same_weights(load_model("tiny_cnn").module, loaded.module)
    with pytest.raises(UserInputError, match="available: .*tiny_cnn"):
        load_model("zoo:nope")


def test_file_spec_class_and_function_without_sys_path_pollution(user_file):
    before = list(sys.path)
    loaded = load_model(f"{user_file}:Net")
    assert sys.path == before
    assert type(loaded.module).__name__ == "Net" and not loaded.module.training
    assert loaded.input_shape == (1, 3, 8, 8) and loaded.num_classes == 4
    out = loaded.module(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 4)

    built = load_model(f"{user_file}:build").module
    assert built.conv.out_channels == 5
    # The function has no input_shape attribute, the module it builds does.
    assert load_model(f"{user_file}:build").input_shape == (1, 3, 8, 8)


def test_module_spec():
    loaded = load_model("edgecomp.models.zoo.tiny_cnn:tiny_cnn")
    assert type(loaded.module).__name__ == "TinyCNN"
    assert loaded.input_shape == (1, 1, 28, 28)  # from the built module's class attribute
    loaded = load_model("edgecomp.models.zoo.tiny_cnn:TinyCNN")
    assert loaded.num_classes == 10


def test_dotted_factory_in_file(user_file):
    assert load_model(f"{user_file}:Builders.small").module.conv.out_channels == 2


# ----------------------------------------------------------------------------- weights


def test_pt_state_dict_checkpoint_and_dataparallel_forms(tmp_path):
    source = get_zoo_model("tiny_cnn", seed=5)
    forms = {
        "bare.pt": source.state_dict(),
        "ckpt.pth": {"epoch": 3, "state_dict": source.state_dict(), "optimizer": {"lr": 0.1}},
        "ckpt2.pt": {"model": source.state_dict()},
        "dp.pt": {f"module.{k}": v for k, v in source.state_dict().items()},
    }
    for name, obj in forms.items():
        path = tmp_path / name
        torch.save(obj, path)
        digest = sha(path)
        loaded = load_model("zoo:tiny_cnn", weights=str(path))
        assert loaded.weights == str(path)
        assert_same_weights(loaded.module, source)
        assert sha(path) == digest  # the input file is never modified


def test_safetensors_round_trip_atomic(tmp_path):
    source = get_zoo_model("fmnist_cnn", seed=3)
    path = save_weights(source, tmp_path / "w.safetensors", metadata={"arch": "fmnist_cnn"})
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left behind
    target = get_zoo_model("fmnist_cnn", seed=4)
    assert load_weights(target, path) is target
    assert_same_weights(target, source)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"arch": "fmnist_cnn"}


def test_save_weights_handles_shared_and_non_contiguous_tensors(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4, bias=False)
            self.b = nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight  # tied

    state = {"t": torch.arange(12.0).reshape(3, 4).t(), "s": torch.ones(5)[::2]}
    read = read_state_dict(save_weights(state, tmp_path / "nc.safetensors"))
    assert torch.equal(read["t"], state["t"]) and torch.equal(read["s"], state["s"])

    tied = Tied()
    path = save_weights(tied, tmp_path / "tied.safetensors")
    fresh = Tied()
    load_weights(fresh, path)
    assert torch.equal(fresh.a.weight, tied.a.weight)

    with pytest.raises(UserInputError, match=r"\.safetensors"):
        save_weights(tied, tmp_path / "w.pt")
    with pytest.raises(UserInputError, match="not tensors"):
        save_weights({"x": torch.ones(1), "y": [1]}, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


# ----------------------------------------------------------------------------- pickles


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_full_pickled_model_refused_then_accepted_with_trust(tmp_path, zip_format):
    model = get_zoo_model("tiny_cnn", seed=9)
    path = tmp_path / "full.pt"
    torch.save(model, path, _use_new_zipfile_serialization=zip_format)
    digest = sha(path)
    with pytest.raises(UnsafeModelError) as info:
        load_model(str(path))
    message = str(info.value)
    assert "arbitrary code" in message and "--trust-pickle" in message and "state_dict" in message
    assert "TinyCNN" in message  # names what the pickle would import

    loaded = load_model(str(path), trust_pickle=True)
    assert type(loaded.module).__name__ == "TinyCNN" and not loaded.module.training
    assert loaded.input_shape == (1, 1, 28, 28)
    assert_same_weights(loaded.module, model)

    # As a weights file: also refused, then its state dict is taken.
    with pytest.raises(UnsafeModelError):
        load_weights(get_zoo_model("tiny_cnn"), path)
    target = load_weights(get_zoo_model("tiny_cnn"), path, trust_pickle=True)
    assert_same_weights(target, model)
    assert sha(path) == digest


class _Payload:
    """Unpickling this runs open(marker, 'w'): a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_never_runs_without_trust(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": _Payload(marker)}, path)
    for call in (lambda: load_model(str(path)), lambda: load_weights(get_zoo_model("tiny_cnn"), path)):
        with pytest.raises(UnsafeModelError, match=r"(builtins|io)\.open"):
            call()
        assert not marker.exists()
    # The danger is real: trusting the file runs the payload (then fails: it is no state dict).
    with pytest.raises(UserInputError, match="not a state dict"):
        load_weights(get_zoo_model("tiny_cnn"), path, trust_pickle=True)
    assert marker.exists()


def test_state_dict_given_as_model_spec_points_to_weights(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(get_zoo_model("tiny_cnn").state_dict(), path)
    with pytest.raises(UserInputError, match="state dict, not a model.*--weights"):
        load_model(str(path))
    st = save_weights(get_zoo_model("tiny_cnn"), tmp_path / "w.safetensors")
    with pytest.raises(UserInputError, match="weights only"):
        load_model(str(st))
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(UserInputError, match="ONNX model"):
        load_model(str(tmp_path / "m.onnx"))


# ----------------------------------------------------------------------------- bad weights


@pytest.mark.parametrize("kind", ["truncated_pt", "garbage_pt", "empty_pt", "truncated_safetensors"])
def test_corrupt_files(tmp_path, kind):
    model = get_zoo_model("tiny_cnn")
    if kind.endswith("safetensors"):
        good = save_weights(model, tmp_path / "good.safetensors")
        path = tmp_path / "bad.safetensors"
    else:
        good = tmp_path / "good.pt"
        torch.save(model.state_dict(), good)
        path = tmp_path / "bad.pt"
    data = good.read_bytes()
    path.write_bytes({"garbage_pt": b"definitely not a checkpoint", "empty_pt": b""}.get(kind, data[: len(data) // 2]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserInputError, match="corrupt"):
        load_weights(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_wrong_keys_are_named(tmp_path):
    path = save_weights(get_zoo_model("mlp_fmnist"), tmp_path / "mlp.safetensors")
    with pytest.raises(UserInputError) as info:
        load_model("zoo:tiny_cnn", weights=path)
    message = str(info.value)
    assert "missing from the file: conv1.weight" in message
    unexpected = message.split("unexpected in the file:")[1]
    assert "fc1.weight" in unexpected and "6 unexpected" in message


def test_wrong_shapes_are_named_and_model_untouched(tmp_path):
    path = tmp_path / "five.pt"
    torch.save(get_zoo_model("tiny_cnn", num_classes=5).state_dict(), path)
    model = get_zoo_model("tiny_cnn")
    before = model.fc.weight.clone()
    with pytest.raises(UserInputError, match=r"mismatched shapes: fc.weight \(file \(5, 256\) vs model \(10, 256\)\)"):
        load_weights(model, path)
    assert torch.equal(model.fc.weight, before)


def test_missing_and_unsupported_weight_files(tmp_path):
    model = get_zoo_model("tiny_cnn")
    with pytest.raises(UserInputError, match="not found"):
        load_weights(model, tmp_path / "absent.pt")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(UserInputError, match="unsupported weights file extension '.npz'"):
        load_weights(model, tmp_path / "w.npz")
    with pytest.raises(UserInputError, match="not a regular file"):
        load_weights(model, tmp_path)
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(UserInputError, match="holds a list"):
        load_weights(model, tmp_path / "list.pt")


# ----------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize(
    "attr, pattern",
    [
        ("not_a_model", "returned a int, not a torch.nn.Module"),
        ("needs_args", "must be callable with no arguments"),
        ("Plain", "not a torch.nn.Module subclass"),
        ("instance", "nn.Module instance, not a factory"),
        ("CONSTANT", "is a int, not a class or function"),
        ("Missing", "not found in .*candidates: Net, build, needs_args, not_a_model"),
    ],
)
def test_bad_factories(user_file, attr, pattern):
    with pytest.raises(UserInputError, match=pattern):
        load_model(f"{user_file}:{attr}")


def test_bad_specs(tmp_path):
    broken = write_py(tmp_path, "broken.py", "raise RuntimeError('boom at import')\n")
    with pytest.raises(UserInputError, match="importing .*broken.py failed: RuntimeError: boom at import"):
        load_model(f"{broken}:Net")
    assert not any(name.startswith("_edgecomp_user_model_broken") for name in sys.modules)
    syntax = write_py(tmp_path, "syntax.py", "def f(:\n")
    with pytest.raises(UserInputError, match="SyntaxError"):
        load_model(f"{syntax}:f")
    sibling = write_py(tmp_path, "sibling.py", "import definitely_missing_sibling_xyz\n")
    with pytest.raises(UserInputError, match="package.module:Factory"):
        load_model(f"{sibling}:Net")
    with pytest.raises(UserInputError, match="model file not found"):
        load_model(f"{tmp_path / 'absent.py'}:Net")
    with pytest.raises(UserInputError, match="model file not found"):
        load_model(str(tmp_path / "absent.pt"))
    with pytest.raises(UserInputError, match="no module named 'no_such_pkg_xyz.models'"):
        load_model("no_such_pkg_xyz.models:Net")
    with pytest.raises(UserInputError, match="name the factory"):
        load_model(str(broken))
    with pytest.raises(UserInputError, match="cannot understand model spec"):
        load_model("resnet")
    with pytest.raises(UserInputError, match="empty model spec"):
        load_model("  ")
