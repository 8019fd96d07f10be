"""--torch-device / --amp / --workers (edgecomp.torch_device): refusals with the reason, auto, AMP off unchanged,
bf16 on the CPU, DataLoader workers; the CUDA tests skip (saying why) where torch sees no GPU."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import Dataset

import edgecomp
from edgecomp.cli import main
from edgecomp.data import ArrayDataset
from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.finetune import evaluate, train
from edgecomp.torch_device import (Placement, TorchDeviceError, module_device, resolve_amp, resolve_placement,
                                   resolve_torch_device)

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = ("no CUDA device: " + (f"torch {torch.__version__} was built without CUDA" if torch.version.cuda is None
                                 else "torch.cuda.is_available() is False"))
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
without_cuda = pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the refusal cannot happen here")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))


def _data(n: int = 192) -> ArrayDataset:
    g = torch.Generator().manual_seed(4)
    return ArrayDataset(torch.rand(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g), name="toy",
                        num_classes=3)


def _train(placement=None, data=None, **kw):
    model = _net()
    train(model, data or _data(), epochs=2, lr=0.1, batch_size=32, seed=1, progress=False, placement=placement, **kw)
    return model


def test_auto_is_the_best_device_here_and_specs_are_checked():
    expected = "cuda" if HAS_CUDA else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_torch_device("auto").type == expected
    assert resolve_torch_device(" CPU ") == torch.device("cpu")
    with pytest.raises(TorchDeviceError, match="expected one of auto, cpu, cuda, cuda:N, mps"):
        resolve_torch_device("gpu")
    with pytest.raises(UserInputError, match="--workers"):
        resolve_placement("cpu", "off", -1)
    assert resolve_placement("cpu").workers == 0  # the CPU default: no loader processes


@without_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_refused_with_the_reason(spec):
    with pytest.raises(TorchDeviceError) as info:
        resolve_torch_device(spec)
    message = str(info.value)
    assert message.startswith(f"--torch-device {spec}: torch {torch.__version__}")
    assert "use --torch-device cpu" in message and info.value.exit_code == 2


def test_amp_rules():
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16  # asked for explicitly: allowed on the CPU
    with pytest.raises(TorchDeviceError, match="--amp fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)
    with pytest.raises(TorchDeviceError, match="expected one of off, bf16, fp16"):
        resolve_amp("fp8", cpu)


@without_cuda
def test_cli_refuses_cuda_before_loading_anything(tmp_path):
    """A real `edgecomp compress` process: exit 2 with the reason, before the (missing) data is read."""
    args = [sys.executable, "-m", "edgecomp", "compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--method", "lc",
            "--data", f"npz:{tmp_path / 'missing.npz'}", "--torch-device", "cuda", "-o", str(tmp_path / "out")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--torch-device cuda: torch" in proc.stderr and "built without CUDA" in proc.stderr
    assert "missing.npz" not in proc.stderr and not (tmp_path / "out").exists()


@without_cuda
def test_api_and_export_refuse_cuda(tmp_path):
    with pytest.raises(TorchDeviceError, match="--torch-device cuda:0"):
        edgecomp.compress(_net(), input_shape=(1, 8), mac_budget=0.5, method="uniform", data="npz:/nonexistent.npz",
                          torch_device="cuda:0")
    result = CliRunner().invoke(main, ["export", "--device", "x86-host", "--torch-device", "cuda", "--amp", "bf16",
                                       "-o", str(tmp_path / "e")])
    assert result.exit_code == 2 and "built without CUDA" in result.output
    assert not (tmp_path / "e").exists()
    result = CliRunner().invoke(main, ["export", "--device", "x86-host", "--torch-device", "cpu", "--amp", "fp16",
                                       "-o", str(tmp_path / "e")])
    assert result.exit_code == 2 and "needs a CUDA device" in result.output


def test_api_records_device_and_amp_and_returns_a_cpu_model():
    result = edgecomp.compress(_net(), input_shape=(1, 8), mac_budget=0.6, method="uniform", data=_data(),
                               finetune_epochs=1, torch_device="cpu", amp="bf16")
    assert (result.report["torch_device"], result.report["amp"], result.report["workers"]) == ("cpu", "bf16", 0)
    assert module_device(result.model).type == "cpu"
    with pytest.raises(UserInputError, match="need checkpoint=PATH"):
        edgecomp.compress(_net(), input_shape=(1, 8), mac_budget=0.6, method="uniform", resume=True)


def test_amp_off_is_bit_identical_and_bf16_runs_on_cpu():
    plain = _train()
    off = _train(resolve_placement("cpu", "off", 0))
    for a, b in zip(plain.parameters(), off.parameters()):
        assert torch.equal(a, b)
    bf16 = _train(resolve_placement("cpu", "bf16", 0))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in bf16.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), bf16.parameters())), "autocast had no effect"
    assert max(float((a - b).abs().max()) for a, b in zip(plain.state_dict().values(), bf16.state_dict().values())) < 0.1


def test_lc_bf16_runs_on_cpu():
    from edgecomp.lc import run_lc

    result = run_lc(_net(), _data(), scheme="spatial", input_shape=(1, 8), ranks={"0": 4, "3": 2}, n_mu=2,
                    steps_per_mu=4, batch_size=32, progress=False, placement=resolve_placement("cpu", "bf16", 0))
    assert len(result.history) == 3 and all(torch.isfinite(p).all() for p in result.model.parameters())


class UserDataset(Dataset):
    """A user's map-style Dataset (not held in memory by edgecomp): batches go through a DataLoader."""

    def __init__(self, fail_at: int | None = None):
        self.inner, self.fail_at = _data(), fail_at

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise UserInputError(f"sample {i} is broken")
        x, y = self.inner[i]
        return x, int(y)


def test_dataloader_workers_give_the_same_run_and_one_line_errors():
    from edgecomp.api.data import as_dataset

    data = as_dataset(UserDataset(), "data")
    assert not data.in_memory and _data().in_memory
    in_process = _train(Placement(workers=0), data=data)
    with_workers = _train(Placement(workers=2), data=data)
    reference = _train(data=_data())  # the in-memory gather path: the same batches, so the same weights
    for a, b, c in zip(in_process.parameters(), with_workers.parameters(), reference.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(UserInputError) as info:
        evaluate(_net(), as_dataset(UserDataset(fail_at=5), "data"), placement=Placement(workers=1))
    assert str(info.value) == "sample 5 is broken"
    assert isinstance(info.value, EdgecompError)


@needs_cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda_training_returns_the_model_to_the_cpu(amp):
    placement = resolve_placement("cuda", amp)
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    model = _train(placement)
    assert module_device(model).type == "cpu" and all(torch.isfinite(p).all() for p in model.parameters())
    metrics = evaluate(model, _data(), placement=placement)
    assert metrics["top1"] is not None and module_device(model).type == "cpu"


@needs_cuda
def test_cuda_compress_and_lc_result_on_cpu():
    result = edgecomp.compress(_net(), input_shape=(1, 8), mac_budget=0.6, method="lc", data=_data(),
                               lc={"n_mu": 2, "steps_per_mu": 4}, finetune_epochs=1, torch_device="cuda", amp="fp16")
    assert result.report["torch_device"].startswith("cuda") and result.report["amp"] == "fp16"
    assert module_device(result.model).type == "cpu"


# -- COBLA on the chosen device ---------------------------------------------------------------------------

def _cobla_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 3))


def _cobla(placement, labels: bool = True):
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import LCOptions, compress, resolve_budgets
    from edgecomp.graph.cost import analyze_model

    model, data = _cobla_net(), _data()
    if not labels:
        data = ArrayDataset(data.get_batch(range(len(data)))[0], None, name="toy")
    budgets = resolve_budgets(analyze_model(model, (1, 8), "spatial"), "fp32", mac_budget="0.4")
    result = compress(model, (1, 8), budgets, method="cobla", data=data,
                      cobla=CoblaOptions(max_iter=4, draws=4, sample=0.5), lc=LCOptions(placement=placement))
    return model, result


@pytest.mark.parametrize("labels", [True, False])  # cross-entropy; distillation from the (placed) teacher
def test_cobla_with_placement_cpu_gives_exactly_todays_ranks(labels):
    _, today = _cobla(None, labels)
    model, placed = _cobla(resolve_placement("cpu"), labels)
    # [7, 4, 2]: what the oracle gave before it took a device (checked against that code when this was written)
    assert list(map(int, placed.selection.ranks)) == list(map(int, today.selection.ranks)) == [7, 4, 2]
    assert np.array_equal(placed.selection.masks, today.selection.masks)
    assert [h["loss"] for h in placed.selection.info["sqp_history"]] == \
        [h["loss"] for h in today.selection.info["sqp_history"]]
    assert module_device(placed.model).type == "cpu" and module_device(model).type == "cpu"


def _oracle_values(device: torch.device, labels: bool) -> list[tuple[float, np.ndarray]]:
    """E(m) and dE/dm at three mask vectors, on `device`, through run_cobla's placement of the model."""
    from edgecomp.compression.masked import masked_model
    from edgecomp.compression.oracle import MaskLossOracle
    from edgecomp.compression.problem import build_problem, compute_spectra
    from edgecomp.graph.cost import analyze_model

    model, data = _cobla_net(), _data()
    if not labels:
        data = ArrayDataset(data.get_batch(range(len(data)))[0], None, name="toy")
    cost = analyze_model(model, (1, 8), "spatial")
    spectra = compute_spectra(model, cost)
    problem = build_problem(cost, spectra, float("inf"), float("inf"))
    masked, masks = masked_model(model, cost, spectra, [layer.name for layer in problem.layers])
    masked.to(device)
    masks.value = masks.value.to(device)
    model.to(device)
    oracle = MaskLossOracle(masked, masks, data, sample=0.5, batch_size=64, teacher=model)
    rng = np.random.default_rng(1)
    points = [np.ones(problem.n_masks), rng.random(problem.n_masks), rng.random(problem.n_masks)]
    out = [oracle(m, iteration=k) for k, m in enumerate(points)]
    assert all(g.dtype == np.float64 for _, g in out)
    return out


@needs_cuda
@pytest.mark.parametrize("labels", [True, False])
def test_cobla_oracle_on_cuda_matches_the_cpu(labels):
    cpu = _oracle_values(torch.device("cpu"), labels)
    cuda = _oracle_values(resolve_torch_device("cuda"), labels)
    for (e_cpu, g_cpu), (e_cuda, g_cuda) in zip(cpu, cuda):
        assert abs(e_cpu - e_cuda) <= 1e-4
        np.testing.assert_allclose(g_cuda, g_cpu, atol=1e-4, rtol=0)


@needs_cuda
def test_cobla_on_cuda_ends_on_the_cpu():
    model, result = _cobla(resolve_placement("cuda"), labels=False)
    assert module_device(result.model).type == "cpu" and module_device(model).type == "cpu"
    assert result.selection.info["sqp_iterations"] >= 1


# -- edgecomp export: the placement reaches each round's compression ------------------------------------------

@without_cuda
def test_export_cli_refuses_cuda_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["export", "zoo:tiny_cnn", "--device", "x86-host", "--target", "local",
                                       "--data", f"npz:{tmp_path / 'missing.npz'}", "--torch-device", "cuda",
                                       "--checkpoint-every", "5", "--resume", "-o", str(tmp_path / "e")])
    assert result.exit_code == 2, result.output
    assert "--torch-device cuda: torch" in result.output and "built without CUDA" in result.output
    assert "missing.npz" not in result.output and not (tmp_path / "e").exists()


def test_export_passes_the_placement_and_checkpoints_to_compress(tmp_path, monkeypatch):
    """compress_stage hands --torch-device / --amp / --workers / --checkpoint-every / --resume to compress_loaded
    and removes the round's checkpoint once the stage's output is written, not before."""
    from types import SimpleNamespace

    from edgecomp.compression import run
    from edgecomp.pipeline import ExportRequest, rounds
    from edgecomp.profiles import load_profile

    seen, events = {}, []
    checkpoint = SimpleNamespace(remove=lambda: events.append("checkpoint removed"))

    def fake_compress(request, loaded, data, eval_data, log):
        seen.update(vars(request))
        return SimpleNamespace(checkpoint=checkpoint)

    def fake_write(folder, done, log):
        events.append("outdir written")
        return {"macs": 1, "params": 1, "mac_ratio": 0.5, "param_ratio": 0.5, "accuracy": None,
                "original_accuracy": None, "mac_budget": 1, "layers": []}

    monkeypatch.setattr(run, "compress_loaded", fake_compress)
    monkeypatch.setattr(run, "write_outdir", fake_write)
    req = ExportRequest(profile=load_profile("x86-host"), outdir=str(tmp_path), model="zoo:tiny_cnn",
                        torch_device="cpu", amp="bf16", workers=3, checkpoint_every=7, resume=True)
    rounds.compress_stage(req, tmp_path / "round-1" / "compress", "0.5", None, None, print)
    assert (seen["torch_device"], seen["amp"], seen["workers"]) == ("cpu", "bf16", 3)
    assert (seen["checkpoint_every"], seen["resume"]) == (7, True)
    assert events == ["outdir written", "checkpoint removed"]


def test_compress_fingerprint_changes_with_device_and_amp_not_workers(tmp_path):
    from edgecomp.pipeline.rounds import placement_inputs
    from edgecomp.pipeline.stages import Stages

    runs = []
    stages = Stages(tmp_path, log=runs.append)
    base = {"model": "zoo:tiny_cnn", "method": "cobla"}

    def stage(placement: Placement) -> None:
        stages.run("compress", "round-1/compress", {**base, **placement_inputs(placement)}, lambda folder: {"ok": 1})

    stage(Placement(torch.device("cpu"), None, 0))
    assert placement_inputs(Placement(torch.device("cpu"), None, 4)) == {}  # what runs before the option existed
    stage(Placement(torch.device("cpu"), None, 4))  # more loader workers: the same result, reused
    stage(Placement(torch.device("cuda", 0), None, 4))  # another device: recomputed
    stage(Placement(torch.device("cuda", 1), None, 0))  # another GPU of the same kind: reused
    stage(Placement(torch.device("cuda", 1), torch.bfloat16, 0))  # AMP: recomputed
    assert runs == ["[compress] running", "[compress] reusing finished stage in " + str(tmp_path / "round-1/compress"),
                    "[compress] redoing " + str(tmp_path / "round-1/compress") + ": its inputs changed (torch_device)",
                    "[compress] reusing finished stage in " + str(tmp_path / "round-1/compress"),
                    "[compress] redoing " + str(tmp_path / "round-1/compress") + ": its inputs changed (amp)"]


@needs_cuda
@pytest.mark.parametrize("labels", [True, False])  # unlabeled: labels sampled on the CPU, the same on both
def test_fisher_scoring_on_cuda_matches_the_cpu(labels):
    from edgecomp.compression.choice_scores import fisher_diagonal
    from edgecomp.torch_device import moved_to

    model, data = _cobla_net(), _data()
    if not labels:
        data = ArrayDataset(data.get_batch(range(len(data)))[0], None, name="toy")
    names, indices = ["0", "2", "4"], np.arange(96)
    cpu = fisher_diagonal(model, names, data, indices)
    with moved_to(resolve_torch_device("cuda"), model):
        cuda = fisher_diagonal(model, names, data, indices)
    assert module_device(model).type == "cpu"
    for name in names:
        assert cuda[name].device.type == "cpu"
        torch.testing.assert_close(cuda[name], cpu[name], rtol=1e-3, atol=1e-8)
