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


def test_export_budgets_latency_on_the_device_itself_and_reports_each_layer(tmp_path, monkeypatch):
    """x86-host measured with --target local is the device itself and has a latency budget. `--cost latency`
    budgets latency from a per-layer table and the report shows each layer's timings and why; `--cost auto`
    (the default) chooses latency there, and an original that the table predicts within the budget is left
    uncompressed (the per-layer measurements come from the cache the first run filled)."""
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path / "cache"))  # never the user's own cache
    fast = ["--warmup", "0.05", "--iterations", "80", "--min-duration", "0.1", "--allow-unstable"]
    run = edgecomp("export", "zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--method", "pos-cvx",
                   "--latency-budget-ms", "50", "--cost", "latency", "--layer-timing", "in-context", *fast, "-o", "out",
                   "--json", cwd=tmp_path)
    assert run.returncode == 0, str(run)
    report = run.json()
    assert report["cost"] == "latency" and report["cost_choice"]["asked"] == "latency"
    rows = report["final"]["compress"]["latency_layers"]
    assert {row["name"] for row in rows} == {"conv1", "conv2", "fc"}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Compute cost budgeted: latency (--cost latency" in markdown
    assert "| layer | dense (ms) | rank | factored (ms) | chosen | why |" in markdown
    assert all(f"| {row['name']} | " in markdown for row in rows)
    assert "predicted" in markdown and "measured p50" in markdown
    timing = report["final"]["compress"]["layer_timing"]
    assert timing["asked"] == "in-context" and timing["mode"] == "in-context", timing
    assert f"Per-layer timings: in-context ({timing['why']})" in markdown
    versus = report["final"]["versus_original"]  # the artifact timed against the original, whatever it shows
    assert versus["ratio"] > 0 and len(versus["round_ratios"]) == 5 and isinstance(versus["slower"], bool)
    assert "Against the original, timed together on the target" in markdown
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Per-layer latency" in html

    auto = edgecomp("export", "zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--method", "pos-cvx",
                    "--latency-budget-ms", "50", *fast, "-o", "auto", "--json", cwd=tmp_path)
    assert auto.returncode == 0, str(auto)
    report = auto.json()
    assert report["cost"] == "latency" and report["cost_choice"]["asked"] == "auto"
    assert "x86-host has a latency budget" in report["cost_choice"]["why"]
    assert report["final"]["compress"].get("skipped") is True  # tiny_cnn is far inside 50 ms
    assert "skipping compression" in auto.stderr + auto.stdout or "original (fits)" in auto.stdout
    assert "x86-host has a latency budget" in (tmp_path / "auto" / "report.md").read_text()


def test_compress_with_scheme_auto_and_cobla_names_each_layers_scheme(tmp_path):
    """--scheme auto with the default method: each conv layer takes the scheme that serves the budget best,
    COBLA keeps the knapsack allocation with the lowest held-out loss, and the report says both."""
    run = edgecomp("compress", "zoo:fmnist_cnn", "--weights", shipped_weights(), "--device", "pizero2",
                   "--scheme", "auto", "--mac-budget", "0.5", "--memory-budget", "none", "--data", "fashion-mnist:train",
                   "--eval-data", "fashion-mnist:test", "--sample", "0.01", "--torch-device", "cpu", "-o", "auto",
                   "--json", cwd=tmp_path)
    assert run.returncode == 0, str(run)
    report = run.json()
    assert report["scheme"] == "auto" and report["method"] == "cobla"
    assert report["macs"] <= 0.5 * report["original_macs"]
    factored = [row for row in report["layers"] if row["factored"]]
    assert factored and all(row["scheme"] in ("spatial", "channel", "cp", "tucker2", "linear") for row in factored)
    info = report["selection_info"]
    assert info["chosen_candidate"] in info["candidates"]
    assert report["accuracy"] > 0.5  # the built model still classifies (before any fine-tuning)
    assert report["torch_device"] == "cpu"


def test_a_gpu_that_is_not_there_is_refused_before_any_work(tmp_path):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        pytest.skip("torch is not importable")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be shown here")
    run = edgecomp("export", "--device", "pizero2", "--target", "local", "--torch-device", "cuda", "-o", "out",
                   cwd=tmp_path)
    assert run.returncode == 2, str(run)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cuda" in errors[0].lower(), run.stderr
    assert not (tmp_path / "out").exists()


def test_the_default_method_meets_a_latency_budget_the_original_misses(tmp_path, monkeypatch):
    """The built-in model on x86-host (this host is the device): first a generous budget, which the original
    meets uncompressed, tells the user how fast it is; then 0.6x that, with every default (cost auto ->
    latency, method COBLA, per-layer timings in context, ranks aligned to the SIMD width). COBLA used to
    stop here with a false "infeasible" (its shrink fixed a never-faster layer at full rank)."""
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path / "cache"))
    first = edgecomp("export", "--device", "x86-host", "--latency-budget-ms", "1000", "-o", "fits", "--json",
                     cwd=tmp_path)
    assert first.returncode in (0, 3), str(first)
    report = first.json()
    assert report["final"]["compress"].get("skipped") is True and report["cost"] == "latency"
    original_ms = report["final"]["verify"]["latency"]["p50"]
    budget = round(0.6 * original_ms, 4)

    run = edgecomp("export", "--device", "x86-host", "--latency-budget-ms", str(budget), "-o", "out", "--json",
                   cwd=tmp_path)
    assert run.returncode in (0, 1, 3), str(run)  # the gates decide on this machine; the run must not fail
    report = run.json()
    comp = report["final"]["compress"]
    assert report["cost"] == "latency" and comp["method"] == "cobla" and not comp.get("skipped")
    assert comp["predicted_latency_ms"] <= budget * (1 + 1e-9)
    assert comp["rank_multiple"]["source"].startswith("profile x86-host")
    assert comp["layer_timing"]["mode"] in ("in-context", "isolated")  # auto: by what it costs on this machine
    assert comp["layer_timing"]["why"].startswith("auto: ")
    assert report["final"]["versus_original"]["slower"] is False, report["final"]["versus_original"]
