"""The other journeys a user takes: compress-and-export for a Jetson (no memory budget), a CI gate
that decides both ways on any machine, and verification on an SSH board (a real sshd on loopback)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from journey import edgecomp, shipped_weights

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def reference_onnx(tmp_path_factory) -> Path:
    """The shipped Fashion-MNIST model as a verified ONNX file, converted the way a user would."""
    cwd = tmp_path_factory.mktemp("convert")
    run = edgecomp("convert", "zoo:fmnist_cnn", "--weights", shipped_weights(), "--format", "onnx",
                   "-o", "model.onnx", cwd=cwd)
    assert run.returncode == 0, str(run)
    return cwd / "model.onnx"


def test_export_compresses_for_a_jetson_without_memory_budget(tmp_path):
    run = edgecomp("export", "zoo:fmnist_cnn", "--weights", shipped_weights(), "--device", "jetson",
                   "--target", "local", "--mac-budget", "0.4", "--data", "fashion-mnist:train",
                   "--eval-data", "fashion-mnist:test", "--max-iter", "6", "--finetune-epochs", "0.1",
                   "-o", "out", "--json", cwd=tmp_path)
    assert run.returncode in (0, 1), str(run)
    report = run.json()
    assert report["analysis"]["memory_budget_source"] == "none"  # the Orin Nano profile has none
    comp = report["final"]["compress"]
    assert comp["method"] == "cobla" and comp["mac_ratio"] <= 0.4 + 1e-9
    assert comp["accuracy"] is not None and comp["accuracy_before_finetune"] is not None
    export = report["final"]["export"]
    session = ort.InferenceSession(str(tmp_path / export["artifact"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]
    if importlib.util.find_spec("tensorrt") is None:  # the engine is left to be built on the board, with its command
        assert Path(tmp_path / export["trtexec_script"]).is_file()
    else:  # a host with TensorRT builds it here when it also has a GPU
        assert Path(tmp_path / (export.get("engine") or export["trtexec_script"])).is_file()
    assert report["verdict"] in ("PASS", "FAIL")


def test_the_gate_decides_both_ways_far_from_the_budget(reference_onnx):
    cwd = reference_onnx.parent
    measured = edgecomp("profile", reference_onnx, "--device", "x86-host", "--target", "local", "--json", cwd=cwd)
    assert measured.returncode == 0, str(measured)
    p90 = measured.json()["latency"]["p90"]
    assert p90 > 0
    missed = edgecomp("verify", reference_onnx, "--device", "x86-host", "--target", "local",
                      "--latency-budget-ms", f"{p90 / 1000:.6g}", cwd=cwd)
    assert missed.returncode == 1 and "FAIL" in missed.stdout, str(missed)
    met = edgecomp("verify", reference_onnx, "--device", "x86-host", "--target", "local",
                   "--latency-budget-ms", f"{p90 * 1000:.6g}", cwd=cwd)
    assert met.returncode == 0 and "PASS" in met.stdout, str(met)


def test_verify_on_an_ssh_board(reference_onnx, sshd, tmp_path):
    known_hosts = sshd["options"][sshd["options"].index("-o") + 1]
    run = edgecomp("verify", reference_onnx, "--device", "raspberry-pi-5",
                   "--target", f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}",
                   "--identity-file", sshd["identity"], "--ssh-option", known_hosts,
                   "--ssh-option", "StrictHostKeyChecking=yes", "--target-python", sys.executable,
                   "--workdir", tmp_path / "board", "--data", "fashion-mnist:test", "--samples", "500",
                   "--reference", "zoo:fmnist_cnn", "--reference-weights", shipped_weights(),
                   "--latency-budget-ms", "1000", "--report", tmp_path / "verify.json", cwd=tmp_path)
    assert run.returncode == 0, str(run)
    result = json.loads((tmp_path / "verify.json").read_text())
    assert result["verdict"] == "PASS"
    assert "ssh://" in json.dumps(result["report"])  # measured on the board, and the report says so
    assert (tmp_path / "board").is_dir()  # the agent really ran there


def test_compress_with_cp_scheme_and_unconstrained_memory_then_verify_the_directory(tmp_path):
    """A CP-factored model under a MAC budget, memory explicitly unconstrained, verified from its ONNX file."""
    run = edgecomp("compress", "zoo:fmnist_cnn", "--weights", shipped_weights(), "--device", "pizero2",
                   "--scheme", "cp", "--mac-budget", "0.5", "--memory-budget", "none", "--data", "fashion-mnist:train",
                   "--eval-data", "fashion-mnist:test", "--max-iter", "3", "--sample", "0.01", "--draws", "4",
                   "-o", "cp", "--json", cwd=tmp_path)
    assert run.returncode == 0, str(run)
    report = run.json()
    assert report["scheme"] == "cp" and report["macs"] <= 0.5 * report["original_macs"]
    assert report["memory_budget_source"] == "--memory-budget none"
    refits = [row["cp_refit"] for row in report["layers"] if row.get("cp_refit")]
    assert refits and all(r["error_after"] <= r["error_before"] + 1e-9 for r in refits)
    verified = edgecomp("verify", "cp", "--device", "x86-host", "--target", "local", "--data", "fashion-mnist:test",
                        "--latency-budget-ms", "1000", "--max-accuracy-drop", "0.5", cwd=tmp_path)
    assert verified.returncode == 0, str(verified)  # from model.onnx: no code named by recipe.json runs
