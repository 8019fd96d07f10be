"""The Python API (`import edgecomp`) with in-memory models and the user's own data."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import edgecomp
from edgecomp.api.budgets import budget_text
from edgecomp.api.data import as_dataset
from edgecomp.exporters.onnx_export import input_shapes as as_input_shape
from edgecomp.errors import InfeasibleBudgetError, UserInputError

QUICK = {"max_iter": 3, "draws": 4, "sample": 0.5}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(192, 1, 28, 28, generator=g), torch.randint(0, 10, (192,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32)


def test_compress_in_memory_model_with_a_dataloader_under_a_device_budget(loader, tmp_path):
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = edgecomp.compress(model, device="jetson", input_shape=(1, 1, 28, 28), data=loader, eval_data=loader,
                               mac_budget=0.5, cobla=QUICK)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    assert result.report["macs"] <= 0.5 * result.report["original_macs"]
    assert result.ranks and set(result.ranks) <= {"0", "2", "6", "8"}
    assert result.report["memory_budget_source"] == "none"  # the Orin Nano has no memory budget
    assert 0.0 <= result.report["accuracy"] <= 1.0
    out = result.model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    # the same directory `edgecomp compress` writes
    saved = result.save(tmp_path / "out")
    assert {"model.safetensors", "recipe.json", "model.onnx", "report.json", "ranks.png"} <= {p.name for p in saved.iterdir()}
    assert json.loads((saved / "report.json").read_text())["macs"] == result.report["macs"]


def test_budget_semantics_none_is_the_device_inf_is_unconstrained(loader):
    pizero = edgecomp.load_profile("pizero2")  # a MAC budget derived from its latency budget, no memory budget
    model = _net()
    device_budget = edgecomp.compress(model, device=pizero, input_shape=(1, 1, 28, 28), data=loader,
                                      method="uniform", memory_budget=0.5)
    assert device_budget.report["mac_budget_source"].startswith("derived from latency")
    unconstrained = edgecomp.compress(model, device=pizero, input_shape=(1, 1, 28, 28), data=loader,
                                      method="uniform", mac_budget=math.inf, memory_budget=0.5)
    assert unconstrained.report["mac_budget"] == math.inf
    assert unconstrained.report["mac_budget_source"] == "--mac-budget none"
    assert device_budget.report["mac_budget"] == pizero.resolve_budgets(1.0, 1.0).macs < math.inf
    assert unconstrained.report["params"] <= 0.5 * unconstrained.report["original_params"]
    assert budget_text(None, "b") is None and budget_text(math.inf, "b") == "none"
    assert budget_text(0.5, "b") == "0.5" and budget_text("30M", "b") == "30M"
    with pytest.raises(UserInputError, match="positive"):
        budget_text(-1.0, "mac_budget")


def test_infeasible_budget_says_the_minimum(loader):
    with pytest.raises(InfeasibleBudgetError, match="minimum achievable"):
        edgecomp.compress(_net(), input_shape=(1, 1, 28, 28), data=loader, mac_budget=10.0, method="uniform")


def test_data_forms_and_bad_arguments(loader):
    edge = as_dataset(loader)
    assert edge.has_labels and edge.sample_shape == (1, 28, 28) and len(edge) == 192
    x, y = edge.get_batch([0, 1, 2])
    assert x.shape == (3, 1, 28, 28) and y.dtype == torch.int64
    regression = as_dataset(TensorDataset(torch.randn(8, 4), torch.randn(8, 2)))
    assert not regression.has_labels and regression.get_batch([0, 1])[1].shape == (2, 2)  # targets passed through
    assert as_dataset(None) is None
    with pytest.raises(UserInputError, match="Dataset"):
        as_dataset(42)
    assert as_input_shape((1, 3, 8, 8)) == [(1, 3, 8, 8)]
    assert as_input_shape([(1, 3, 8, 8), (1, 10)]) == [(1, 3, 8, 8), (1, 10)]
    with pytest.raises(UserInputError, match="positive dims"):
        as_input_shape((1, 0, 8))
    with pytest.raises(UserInputError, match="nn.Module"):
        edgecomp.compress("zoo:tiny_cnn", device="jetson", input_shape=(1, 1, 28, 28))
    with pytest.raises(UserInputError, match="no budget"):
        edgecomp.compress(_net(), input_shape=(1, 1, 28, 28), data=loader)
    with pytest.raises(UserInputError, match="the options are"):
        edgecomp.compress(_net(), device="jetson", input_shape=(1, 1, 28, 28), data=loader, cobla={"iters": 3})
    with pytest.raises(UserInputError, match="input_shape"):
        edgecomp.export(_net(), device="jetson", target="local")
    with pytest.raises(UserInputError, match="data spec string"):
        edgecomp.export(_net(), device="jetson", data=loader)


def test_import_edgecomp_is_light_and_lists_its_api():
    import subprocess
    import sys

    code = "import sys, edgecomp; print('torch' in sys.modules); print(sorted(edgecomp.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "False"  # the CLI's start-up does not pay for torch
    for name in ("load_profile", "compress", "convert", "verify", "profile", "export", "CompressionResult"):
        assert name in out[1]


def test_regression_model_with_own_loss_training_loop_and_metric():
    """Neither cross-entropy nor top-1 applies: COBLA uses loss_fn, LC and fine-tuning the user's loop."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    data = TensorDataset(x, x @ torch.randn(8, 4, generator=gen))  # float targets
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    calls = {"loss": 0, "train": []}

    def loss_fn(m, batch):
        calls["loss"] += 1
        inputs, targets = batch
        return F.mse_loss(m(inputs), targets)

    def train_fn(m, penalty_fn, steps):
        calls["train"].append(float(penalty_fn().detach()))
        opt = torch.optim.SGD(m.parameters(), lr=min(0.01, getattr(penalty_fn, "max_lr", 0.01)))
        for _ in range(steps):
            opt.zero_grad()
            (F.mse_loss(m(x), data.tensors[1]) + penalty_fn()).backward()
            opt.step()

    def neg_mse(outputs, targets):
        return -float(F.mse_loss(torch.as_tensor(outputs), torch.as_tensor(targets)))

    cobla = edgecomp.compress(model, input_shape=(1, 8), data=data, eval_data=data, mac_budget=0.5,
                              loss_fn=loss_fn, metric=neg_mse, cobla=QUICK)
    assert calls["loss"] > 0 and cobla.report["macs"] <= 0.5 * cobla.report["original_macs"]
    assert cobla.report["accuracy_metric"] == "user metric" and cobla.report["original_accuracy"] <= 0
    lc = edgecomp.compress(model, input_shape=(1, 8), data=data, eval_data=data, mac_budget=0.5, method="lc",
                           lc={"n_mu": 2, "steps_per_mu": 5}, train_fn=train_fn, metric=neg_mse,
                           finetune_epochs=1.0)
    assert len(calls["train"]) >= 3  # two L steps and the fine-tuning
    assert any(p > 0 for p in calls["train"]) and calls["train"][-1] == 0.0  # LC's penalty; none when fine-tuning
    assert lc.report["finetune"]["mode"] == "train_fn" and lc.report["macs"] <= 0.5 * lc.report["original_macs"]


def test_verify_gates_a_user_metric_in_its_own_units(tmp_path):
    import numpy as np

    model = _net()
    onnx_path = edgecomp.convert(model, tmp_path / "m.onnx", input_shape=(1, 1, 28, 28)).onnx_path
    calls = []

    def top1(outputs, labels):
        calls.append(len(labels))
        return float(np.mean(np.argmax(outputs, axis=1) == labels))

    quick = {"warmup_s": 0.0, "iterations": 20, "min_duration_s": 0.0}
    plain = edgecomp.verify(onnx_path, device="x86-host", target="local", data="fashion-mnist:test",
                            latency_budget_ms=1000, max_accuracy_drop=1.0, reference_accuracy=1.0, settings=quick)
    mine = edgecomp.verify(onnx_path, device="x86-host", target="local", data="fashion-mnist:test",
                           latency_budget_ms=1000, max_accuracy_drop=1.0, reference_accuracy=1.0, settings=quick,
                           metric=top1)
    assert calls and mine.report.accuracy["metric"] == pytest.approx(plain.report.accuracy["top1"])
    gate = {g.name: g for g in mine.gates}["accuracy drop"]
    assert gate.unit == "metric" and gate.status == "PASS"
    assert gate.measured == pytest.approx(1.0 - plain.report.accuracy["top1"])
    strict = edgecomp.verify(onnx_path, device="x86-host", target="local", data="fashion-mnist:test",
                             latency_budget_ms=1000, max_accuracy_drop=0.0, reference_accuracy=1.0, settings=quick,
                             metric=top1)
    assert strict.exit_code == 1  # an untrained net is far below a perfect reference
    with pytest.raises(UserInputError, match="user metric without a reference"):
        edgecomp.verify(onnx_path, device="x86-host", target="local", data="fashion-mnist:test",
                        latency_budget_ms=1000, settings=quick, metric=top1)


def test_review_fixes_data_labels_and_regression_targets():
    import numpy as np
    from torch.utils.data import Subset

    from edgecomp.data import ArrayDataset

    class NumpyLabels(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(1, 28, 28), np.int64(i % 3)

    labelled = as_dataset(NumpyLabels())
    assert labelled.has_labels and labelled.get_batch([0, 1, 2, 3])[1].tolist() == [0, 1, 2, 0]
    unlabelled = ArrayDataset(np.zeros((6, 1, 28, 28), np.float32), None, name="u")
    assert not as_dataset(DataLoader(Subset(unlabelled, [0, 1, 2]))).has_labels  # -1 is not a class
    regression = TensorDataset(torch.randn(32, 8), torch.randn(32, 2))
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    with pytest.raises(UserInputError, match="loss_fn"):
        edgecomp.compress(mlp, input_shape=(1, 8), data=regression, mac_budget=0.5)
    with pytest.raises(UserInputError, match="train_fn"):
        edgecomp.compress(mlp, input_shape=(1, 8), data=regression, mac_budget=0.5, method="uniform",
                          finetune_epochs=1.0)
    with pytest.raises(UserInputError, match="unknown option bogus"):
        edgecomp.verify("model.onnx", device="x86-host", bogus=1)


def test_saved_in_memory_model_names_no_spec_and_is_re_evaluated_after_own_training(loader, tmp_path):
    import torch.nn.functional as F

    from edgecomp.factor import load_compressed

    result = edgecomp.compress(_net(), device="jetson", input_shape=(1, 1, 28, 28), data=loader, eval_data=loader,
                               mac_budget=0.5, method="uniform")
    opt = torch.optim.SGD(result.model.parameters(), lr=0.05)
    for x, y in loader:  # the user's own training changes the weights
        opt.zero_grad()
        F.cross_entropy(result.model(x), y).backward()
        opt.step()
    saved = result.save(tmp_path / "out")
    report = json.loads((saved / "report.json").read_text())
    assert report["trained_after_compress"] and report["accuracy_at_compress"] is not None
    from edgecomp.compression.run import evaluate_accuracy

    assert report["accuracy"] == pytest.approx(evaluate_accuracy(result.model, as_dataset(loader)))  # measured again
    recipe = json.loads((saved / "recipe.json").read_text())
    assert recipe["source"]["spec"] is None and recipe["source"]["in_memory"] == "Sequential"
    with pytest.raises(UserInputError, match="in-memory Sequential"):
        load_compressed(saved, trust_code=True)
    rebuilt = load_compressed(saved, source_module=_net()).module
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(rebuilt(x), result.model.eval()(x), atol=1e-5)


def test_verify_never_reads_a_user_metric_as_top1(tmp_path):
    """compress measured a user metric: verify DIR must not gate top-1 against that number."""
    import numpy as np

    gen = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.rand(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen))
    result = edgecomp.compress(_net(), device="jetson", input_shape=(1, 1, 28, 28), data=data, eval_data=data,
                               mac_budget=0.5, method="uniform", metric=lambda out, y: 0.02 + 0 * float(np.mean(y)))
    saved = result.save(tmp_path / "out")
    with pytest.raises(UserInputError, match="no reference accuracy"):
        edgecomp.verify(saved, device="x86-host", target="local", data="fashion-mnist:test", latency_budget_ms=1000,
                        settings={"warmup_s": 0.0, "iterations": 20, "min_duration_s": 0.0})


def test_convert_never_replaces_a_users_onnx_file_beside_its_output(tmp_path):
    (tmp_path / "net.onnx").write_text("the user's own file")
    with pytest.raises(UserInputError, match="edgecomp did not write it"):
        edgecomp.convert(_net(), tmp_path / "net.int8.onnx", input_shape=(1, 1, 28, 28), precision="int8",
                         calibration=torch.rand(16, 1, 28, 28).numpy())
    assert (tmp_path / "net.onnx").read_text() == "the user's own file"
