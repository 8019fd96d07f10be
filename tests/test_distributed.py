"""Data parallelism (edgecomp.distributed): shards cover the sample exactly, the 2-process COBLA oracle
returns the 1-process E(m) and dE/dm, 2-process fine-tuning, LC and evaluation end where 1 process
does (checkpoints written by rank 0, read by all), and `torchrun ... edgecomp compress --finetune-epochs`
picks the 1-process ranks and accuracy, writes one output directory and exits 0 on every rank. Real
processes, gloo, OMP_NUM_THREADS=1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist

from edgecomp.distributed import Dist, all_reduce_sum, broadcast_array, current, shard_chunks, shard_indices

pytestmark = pytest.mark.skipif(not (tdist.is_available() and tdist.is_gloo_available()),
                                reason="this PyTorch build has no torch.distributed gloo backend")
ORACLE = {"sample": 150, "batch_size": 32, "seed": 5}


def test_shards_are_disjoint_and_cover_the_sample():
    indices = np.random.default_rng(0).permutation(103)
    for world in (1, 2, 3, 4):
        parts = [shard_indices(indices, r, world) for r in range(world)]
        joined = np.concatenate(parts)
        assert len(joined) == len(indices) and set(joined) == set(indices)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        chunks = sorted(c for r in range(world) for c in shard_chunks(103, 10, r, world))
        assert chunks == [(s, min(103, s + 10)) for s in range(0, 103, 10)]  # the 1-process batches
    with pytest.raises(ValueError):
        shard_indices(indices, 2, 2)


def test_one_process_is_world_one_and_helpers_are_identities():
    dist = current()
    assert dist == Dist() and dist.is_main and not dist.active
    assert all_reduce_sum(2.5) == 2.5
    assert np.array_equal(all_reduce_sum(np.arange(3)), np.arange(3.0))
    assert np.array_equal(broadcast_array(np.arange(4)), np.arange(4))


# -- the oracle on two processes ------------------------------------------------------------------------------

def _oracle(dist=None, **switches):
    from edgecomp.compression.masked import masked_model
    from edgecomp.compression.oracle import MaskLossOracle
    from edgecomp.compression.problem import compute_spectra
    from edgecomp.data import ArrayDataset
    from edgecomp.graph import analyze_model
    from edgecomp.models.zoo.tiny_cnn import tiny_cnn

    torch.manual_seed(0)
    model = tiny_cnn().eval()
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.random((200, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 200), name="synthetic",
                        num_classes=10)
    cost = analyze_model(model, (1, 1, 28, 28), "spatial")
    masked, masks = masked_model(model, cost, compute_spectra(model, cost), [lc.name for lc in cost.decomposable])
    m = np.random.default_rng(1).uniform(0.2, 1.0, masks.value.numel())
    return MaskLossOracle(masked, masks, data, dist=dist, **ORACLE, **switches), m


def _values(oracle, m) -> dict:
    e, g = oracle(m, 0)
    held = np.arange(7, 180, 3)
    return {"E": e, "g": g, "loss": oracle.loss(m, 1), "held": oracle.evaluate(m, held, grad=False)[0],
            "held_g": oracle.evaluate(m, held, grad=True)[1]}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1", EDGECOMP_DIST_BACKEND="gloo")
    torch.set_num_threads(1)
    from edgecomp.distributed import init, shutdown

    dist = init()
    try:
        results = []
        for switches in ({}, {"dynamic": True, "initial_sample": 100, "cache_sample": True}):
            oracle, m = _oracle(dist, **switches)
            if dist.is_main:
                values = _values(oracle, m)
                values["norm_tests"] = [vars(t) for t in oracle.norm_tests]
                oracle.finish("done")
                results.append(values)
            else:
                assert oracle.serve() == "done"
        if dist.is_main:
            torch.save(results, out)
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_oracle_equals_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = str(tmp_path / "two.pt")
    torch.multiprocessing.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for got, switches in zip(two, ({}, {"dynamic": True, "initial_sample": 100, "cache_sample": True})):
            oracle, m = _oracle(**switches)
            one = _values(oracle, m)
            for key in ("E", "loss", "held"):
                assert got[key] == pytest.approx(one[key], abs=1e-6), key
            for key in ("g", "held_g"):
                np.testing.assert_allclose(got[key], one[key], rtol=0, atol=1e-6, err_msg=key)
            assert np.abs(one["g"]).max() > 1e-4  # a gradient that could have differed
            if switches:
                tests = [vars(t) for t in oracle.norm_tests]
                assert len(tests) == len(got["norm_tests"]) == 1
                assert got["norm_tests"][0]["required"] == tests[0]["required"]
                assert got["norm_tests"][0]["variance"] == pytest.approx(tests[0]["variance"], rel=1e-5)
    finally:
        torch.set_num_threads(threads)


# -- torchrun edgecomp compress -------------------------------------------------------------------------------

COMPRESS = ["compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--memory-budget", "0.6", "--sample", "128",
            "--max-iter", "3", "--draws", "4", "--seed", "3", "--json"]


def test_torchrun_compress_matches_one_process(tmp_path):
    """COBLA's ranks and, after --finetune-epochs (sharded fine-tuning and evaluation), the accuracy."""
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.random((600, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 600))
    args = [*COMPRESS, "--data", f"npz:{data}", "--eval-data", f"npz:{data}", "--finetune-epochs", "1"]
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "EDGECOMP_DIST_BACKEND": "gloo"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one_dir.mkdir(), two_dir.mkdir()
    one = subprocess.run([os.path.join(bin_dir, "edgecomp"), *args, "-o", str(one_dir / "out")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "--no-python", "edgecomp", *args, "-o", str(two_dir / "out")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr  # torchrun exits 0 only when every rank did
    r1, r2 = json.loads(one.stdout), json.loads(two.stdout)  # rank 1's stdout is silent: one JSON document
    assert [row.get("rank") for row in r2["layers"]] == [row.get("rank") for row in r1["layers"]]
    assert abs(r2["accuracy"] - r1["accuracy"]) <= 0.005
    assert r2["finetune"]["steps"] == r1["finetune"]["steps"] > 0
    assert r2["finetune"]["best_heldout"] == r1["finetune"]["best_heldout"]  # sharded held-out top-1: exact
    assert r2["distributed"]["world_size"] == 2 and r2["distributed"]["backend"] == "gloo"
    assert r1["distributed"]["world_size"] == 1
    assert [p.name for p in two_dir.iterdir()] == ["out"]  # one output directory, no leftover staging folder
    assert json.loads((two_dir / "out" / "report.json").read_text())["distributed"]["world_size"] == 2


# -- fine-tuning, LC and evaluation on two processes ------------------------------------------------------------

class _BNNet(torch.nn.Module):
    """conv-BN-ReLU-pool-linear: per-shard BatchNorm statistics, averaged over the ranks."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, stride=2)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _synthetic(n: int, seed: int):
    from edgecomp.data import ArrayDataset

    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n), name="synthetic",
                        num_classes=10)


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tiny_cnn_state() -> dict:
    from edgecomp.models.zoo.tiny_cnn import tiny_cnn

    return _state(tiny_cnn())


def _training_runs(dist, tmp: Path) -> dict:
    """Fine-tuning (with a checkpoint, resumed), fp16 with a GradScaler, a BatchNorm model, LC and
    evaluation: the same calls on one process (dist None) and on each of two."""
    from edgecomp.finetune import evaluate, train
    from edgecomp.finetune.checkpoint import Checkpoint
    from edgecomp.lc import run_lc
    from edgecomp.models.zoo.tiny_cnn import tiny_cnn
    from edgecomp.torch_device import Placement

    rank = dist.rank if dist else 0
    data, held = _synthetic(160, 0), _synthetic(53, 1)  # 53: shards of 27 and 26
    settings = dict(epochs=1, lr=0.05, batch_size=32, seed=1, eval_data=held, log_every=2, max_steps=4,
                    progress=False, eval_batch_size=16, dist=dist)
    out: dict = {}
    model = tiny_cnn()
    first = Checkpoint(tmp / f"rank{rank}" / "ck", every=2)  # a base of its own per rank: who writes?
    result = train(model, data, checkpoint=first, **settings)
    out["finetune"], out["history"] = _state(model), result.history
    out["wrote_checkpoint"] = first.path("finetune").is_file()
    resumed = tiny_cnn()
    again = Checkpoint(tmp / "rank0" / "ck", every=2, resume=True)  # every rank reads rank 0's
    train(resumed, data, checkpoint=again, **settings)
    out["resumed_from"], out["resumed"] = dict(again.resumed), _state(resumed)
    again.remove()
    out["evaluate"] = evaluate(model, held, batch_size=16, dist=dist)

    fp16 = tiny_cnn()
    train(fp16, data, placement=Placement(torch.device("cpu"), torch.float16, 0),
          **{**settings, "eval_data": None, "max_steps": 3})
    out["fp16"] = _state(fp16)

    torch.manual_seed(0)
    bn = _BNNet()
    train(bn, data, **{**settings, "eval_data": None, "max_steps": 3})
    out["bn"] = _state(bn)

    lc = run_lc(tiny_cnn(), data, scheme="spatial", input_shape=(1, 1, 28, 28), ranks={"conv2": 4, "fc": 3},
                n_mu=2, steps_per_mu=3, lr=0.05, batch_size=32, seed=2, eval_data=held, eval_batch_size=16,
                progress=False, dist=dist)
    out["lc"], out["lc_history"] = _state(lc.model), lc.history
    return out


def _agree_c_step_check(dist) -> dict:
    """A rank whose C step chose other ranks takes rank 0's whole result; equal choices get rank 0's deltas."""
    from edgecomp.lc.algorithm import agree_c_step
    from edgecomp.lc.cstep import CStepResult

    def result(r):
        return CStepResult(deltas={"a": torch.full((2, 3), float(dist.rank))}, spectra={}, ranks={"a": r},
                           squared_error=float(dist.rank))

    same = agree_c_step(result(1), dist)
    other = agree_c_step(result(1 + dist.rank), dist)
    return {"same": (same.ranks, same.deltas["a"].sum().item()),
            "other": (other.ranks, other.squared_error, other.deltas["a"].sum().item())}


def _train_worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1", EDGECOMP_DIST_BACKEND="gloo")
    torch.set_num_threads(1)
    from edgecomp.distributed import init, shutdown

    dist = init()
    try:
        out = _training_runs(dist, Path(tmp))
        out["agree"] = _agree_c_step_check(dist)
        torch.save(out, Path(tmp) / f"out{rank}.pt")
    finally:
        shutdown()


def _assert_states_close(got: dict, want: dict, atol: float, what: str) -> None:
    assert got.keys() == want.keys(), what
    for key in want:
        np.testing.assert_allclose(got[key].double().numpy(), want[key].double().numpy(), rtol=0, atol=atol,
                                   err_msg=f"{what}: {key}")


def test_two_process_training_equals_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.multiprocessing.spawn(_train_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    two = [torch.load(tmp_path / f"out{r}.pt", weights_only=False) for r in (0, 1)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _training_runs(None, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    for key in ("finetune", "resumed", "fp16", "bn", "lc"):  # every rank holds the very same model
        _assert_states_close(two[1][key], two[0][key], 0.0, f"rank 1 vs rank 0, {key}")
    start = _tiny_cnn_state()
    assert max(float((two[0]["finetune"][k] - start[k]).abs().max()) for k in start) > 1e-3  # it trained
    _assert_states_close(two[0]["finetune"], one["finetune"], 1e-5, "fine-tuning")
    _assert_states_close(two[0]["lc"], one["lc"], 1e-5, "LC (penalty counted once)")
    _assert_states_close(two[0]["fp16"], one["fp16"], 2e-3, "fp16 + GradScaler")
    for got, want in zip(two[0]["history"], one["history"]):
        assert got["eval_accuracy"] == want["eval_accuracy"]  # sharded evaluation: exact counts
        loss = want["train_loss"]  # the global batch's (None before the first step)
        assert got["train_loss"] == (None if loss is None else pytest.approx(loss, rel=1e-5))
    assert [h["ranks"] for h in two[0]["lc_history"]] == [h["ranks"] for h in one["lc_history"]]
    got, want = two[0]["evaluate"], one["evaluate"]
    assert got["n"] == want["n"] == 53 and got["top1"] == want["top1"] and got["top5"] == want["top5"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    # checkpoints: rank 0 alone writes; on resume every rank reads it and ends where the full run did
    assert two[0]["wrote_checkpoint"] and not two[1]["wrote_checkpoint"]
    assert two[0]["resumed_from"] == two[1]["resumed_from"] == {"finetune": 2}
    _assert_states_close(two[0]["resumed"], two[0]["finetune"], 0.0, "resumed")
    assert not (tmp_path / "rank0" / "ck.finetune.pt").exists()  # removed by rank 0
    assert two[0]["agree"] == two[1]["agree"] == {"same": ({"a": 1}, 0.0), "other": ({"a": 1}, 0.0, 0.0)}



def test_a_broken_launcher_environment_is_one_error_line_and_exit_2(tmp_path):
    """A process group that cannot start (here RANK is not a number) is the environment's refusal: one
    `error:` line and exit 2, never a traceback and exit 1 (which would read as a failed budget)."""
    import shutil
    from pathlib import Path

    exe = Path(sys.executable).with_name("edgecomp")
    command = [str(exe)] if exe.is_file() else [shutil.which("edgecomp") or "edgecomp"]
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "abc", "LOCAL_RANK": "0"}
    run = subprocess.run([*command, "inspect", "zoo:tiny_cnn"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [
        "error: environment variable RANK='abc' is not an integer (set by torchrun)"]
    assert "Traceback" not in run.stderr
