"""Checkpoints and --resume: a fine-tuning run killed with SIGKILL and resumed ends with the same weights as an
uninterrupted run with the same seed (bit for bit: the checkpoint holds the model, optimizer, RNG state and step,
and the batch order is replayed from the seed), and LC resumes at its next mu."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

from edgecomp.cli import main
from edgecomp.errors import UserInputError
from edgecomp.finetune import train
from edgecomp.finetune.checkpoint import Checkpoint
from edgecomp.data import ArrayDataset

DATASET = '''
import os, time, torch
from torch.utils.data import Dataset

class Slow(Dataset):
    """512 seeded samples; EDGECOMP_TEST_DELAY seconds per item slow the run down so that it can be killed."""
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(512, 1, 28, 28, generator=g)
        self.y = torch.randint(0, 10, (512,), generator=g)
        self.delay = float(os.environ.get("EDGECOMP_TEST_DELAY", "0"))
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        if self.delay:
            time.sleep(self.delay)
        return self.x[i], int(self.y[i])

def make():
    return Slow()
'''
STEPS = 30  # 460 training samples (a tenth is held out) / batch 128 = 3 steps per epoch, 10 epochs


def _args(tmp_path: Path, out: str, *extra: str) -> list[str]:
    return ["compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--method", "uniform", "--data",
            f"{tmp_path / 'slow_data.py'}:make", "--finetune-epochs", str(STEPS // 3), "--threads", "1",
            "--torch-device", "cpu", "--json", "-o", str(tmp_path / out), *extra]


def _in_process(tmp_path: Path, out: str, *extra: str) -> tuple[dict, str]:
    result = CliRunner().invoke(main, _args(tmp_path, out, *extra))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_killed_finetuning_resumes_to_the_uninterrupted_weights(tmp_path):
    """`edgecomp compress` in a subprocess, SIGKILLed once its first checkpoint exists, then --resume (in process,
    as is the uninterrupted reference run, to save two interpreter start-ups)."""
    (tmp_path / "slow_data.py").write_text(DATASET)
    killed = subprocess.Popen([sys.executable, "-m", "edgecomp", *_args(tmp_path, "out", "--checkpoint-every", "2")],
                              cwd=tmp_path, env={**os.environ, "EDGECOMP_TEST_DELAY": "0.002"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ref_report, _ = _in_process(tmp_path, "ref")  # while the subprocess starts up
        checkpoint = tmp_path / ".out.checkpoint.finetune.pt"
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpoint.exists(), "no checkpoint appeared"
    finally:
        killed.send_signal(signal.SIGKILL)
        stderr = killed.communicate()[1]
    assert killed.returncode == -signal.SIGKILL, stderr
    assert not (tmp_path / "out").exists()
    saved = torch.load(checkpoint, weights_only=True)  # tensors and plain values only
    assert 2 <= saved["step"] < STEPS

    report, stderr = _in_process(tmp_path, "out", "--checkpoint-every", "2", "--resume")
    step = report["checkpoint"]["resumed_from"]["finetune"]
    assert step >= saved["step"] and f"continuing finetune from step {step}" in stderr
    assert report["finetune"]["steps"] == STEPS and report["torch_device"] == "cpu" and report["amp"] == "off"
    assert not list(tmp_path.glob(".out.checkpoint*")), "a finished run removes its checkpoint"

    assert ref_report["checkpoint"] is None
    resumed, uninterrupted = (load_file(tmp_path / d / "model.safetensors") for d in ("out", "ref"))
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name
    assert report["finetune"]["curve"] == ref_report["finetune"]["curve"]


class Dying(ArrayDataset):
    """Raises (as a kill would stop the run) on the batch after `limit` batches."""

    def __init__(self, *args, limit: int | None = None, **kw):
        super().__init__(*args, **kw)
        self.limit, self.calls = limit, 0

    def get_batch(self, indices):
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise KeyboardInterrupt
        return super().get_batch(indices)


def _toy(limit=None):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(200, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    return (model, Dying(x, y, name="toy", num_classes=3, limit=limit),
            ArrayDataset(x[:50], y[:50], name="held", num_classes=3))


def _run(model, data, held, checkpoint=None, lr=0.05):
    # 200 / 32 = 6 steps per epoch, 3 epochs: 18 steps; dropout draws from the run's RNG
    return train(model, data, epochs=3, lr=lr, batch_size=32, seed=3, progress=False, eval_data=held,
                 checkpoint=checkpoint, log_every=5)


def test_train_resumes_bit_exactly_and_refuses_other_settings(tmp_path):
    reference = _run(*_toy())
    with pytest.raises(KeyboardInterrupt):
        _run(*_toy(limit=10), checkpoint=Checkpoint(tmp_path / "ck", every=4))
    assert torch.load(tmp_path / "ck.finetune.pt", weights_only=True)["step"] == 8

    with pytest.raises(UserInputError, match=r"other settings \(lr changed\)"):
        _run(*_toy(), checkpoint=Checkpoint(tmp_path / "ck", every=4, resume=True), lr=0.1)
    resume = Checkpoint(tmp_path / "ck", every=4, resume=True)
    resumed = _run(*_toy(), checkpoint=resume)
    assert resume.resumed == {"finetune": 8}
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert resumed.history == reference.history and resumed.best_step == reference.best_step
    resume.remove()
    assert not (tmp_path / "ck.finetune.pt").exists()


def test_lc_resumes_at_the_next_mu(tmp_path):
    from edgecomp.lc import run_lc

    def setup(limit=None):
        g = torch.Generator().manual_seed(2)
        data = Dying(torch.rand(256, 1, 8, 8, generator=g), torch.randint(0, 4, (256,), generator=g), name="img",
                     num_classes=4, limit=limit)
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 4)), data

    kw = dict(scheme="spatial", input_shape=(1, 1, 8, 8), ranks={"0": 2, "3": 3}, n_mu=4, steps_per_mu=5,
              batch_size=32, progress=False, seed=1)
    reference = run_lc(*setup(), **kw)
    with pytest.raises(KeyboardInterrupt):  # dies in the third mu's L step, after the checkpoint of the second
        run_lc(*setup(limit=13), checkpoint=Checkpoint(tmp_path / "lc", every=10), **kw)
    resume = Checkpoint(tmp_path / "lc", every=10, resume=True)
    resumed = run_lc(*setup(), checkpoint=resume, **kw)
    assert resume.resumed == {"lc": 10}
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h["distance"] for h in resumed.history] == [h["distance"] for h in reference.history]
