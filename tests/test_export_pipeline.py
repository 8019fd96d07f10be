"""`edgecomp export`: the whole pipeline on a tiny model with the local target."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgecomp.cli import main

FAST = ["--warmup", "0.05", "--iterations", "80", "--min-duration", "0.1", "--allow-unstable"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("d") / "d.npz"
    np.savez(path, x=rng.random((96, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 96))
    return f"npz:{path}"


def _run(args):
    return CliRunner().invoke(main, ["export", *args, *FAST])


def test_whole_pipeline_with_compression_then_reuse_and_force(tmp_path, data):
    out = tmp_path / "out"
    args = ["zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--data", data, "--eval-data", data,
            "--mac-budget", "0.5", "--method", "pos-cvx", "--finetune-epochs", "0.5", "--max-accuracy-drop", "1",
            "-o", str(out), "--json"]
    first = _run(args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["verdict"] == "PASS" and report["exit_code"] == 0
    (r1,) = report["rounds"]
    assert r1["compress"]["mac_ratio"] <= 0.5
    assert r1["verify"]["latency"]["n"] >= 64  # p90 needs at least 64 samples
    assert {g["status"] for g in r1["verify"]["gates"]} == {"PASS"}
    for name in ("report.json", "report.md", "report.html", "budgets.png", "round-1/compress/model.safetensors",
                 "round-1/export/model.onnx", "round-1/verify/junit.xml", "round-1/verify/latency.png"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3

    again = json.loads(_run(args).stdout)
    assert all(s["reused"] for s in again["stages"])
    forced = json.loads(_run([*args, "--force"]).stdout)
    assert not any(s["reused"] for s in forced["stages"])


def test_damaged_stage_outputs_are_redone_with_a_reason_even_in_compress(tmp_path, data):
    out = tmp_path / "out"
    args = ["zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--data", data, "--eval-data", data,
            "--mac-budget", "0.5", "--method", "pos-cvx", "--finetune-epochs", "0", "--max-accuracy-drop", "1",
            "-o", str(out), "--json"]
    assert _run(args).exit_code == 0
    weights = out / "round-1" / "compress" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:100])  # a truncated copy of edgecomp's own output
    (tmp_path / "keep.txt").write_text("a file of the user's beside the output")
    rerun = _run(args)
    assert rerun.exit_code == 0, rerun.output
    assert "[compress] redoing" in rerun.stderr and "model.safetensors changed" in rerun.stderr
    assert weights.read_bytes() == original  # rebuilt, identical (seeded)
    assert (tmp_path / "keep.txt").is_file()

    weights.write_bytes(b"")  # --force redoes every stage, damaged outputs included
    assert _run([*args, "--force"]).exit_code == 0 and weights.read_bytes() == original

    # a stage.json naming a file outside its folder never makes edgecomp delete that file
    stage = out / "round-1" / "export" / "stage.json"
    doc = json.loads(stage.read_text())
    doc["outputs"]["../../../keep.txt"] = "0" * 64
    stage.write_text(json.dumps(doc))
    assert _run(args).exit_code == 0 and (tmp_path / "keep.txt").is_file()


def test_closed_loop_tightens_mac_budget_when_latency_is_missed(tmp_path, data):
    out = tmp_path / "loop"
    result = _run(["zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--data", data, "--method", "pos-cvx",
                   "--latency-budget-ms", "0.0005", "--max-rounds", "2", "--finetune-epochs", "0", "-o", str(out), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert len(report["rounds"]) == 2
    first, second = report["rounds"]
    assert first["compress"].get("skipped")  # round 1: the original fits the MAC budget
    assert second["compress"]["macs"] < report["analysis"]["original_macs"]
    latency_gate = next(g for g in second["verify"]["gates"] if g["name"].startswith("latency"))
    assert latency_gate["status"] == "FAIL"
    assert any("best achieved" in note for note in report["notes"])


def test_tensorrt_device_on_local_stand_in_writes_trtexec_command(tmp_path):
    out = tmp_path / "trt"
    result = _run(["zoo:tiny_cnn", "--device", "jetson", "--target", "local", "-o", str(out), "--json"])
    assert result.exit_code in (0, 3), result.output
    report = json.loads(result.stdout)
    assert report["stand_in"] is True
    script = report["final"]["export"]["trtexec_script"]
    text = open(script).read()
    assert "trtexec" in text and "--fp16" in text and "--saveEngine=model.engine" in text
    assert any("STAND-IN" in n for n in report["notes"])


def test_failing_stage_is_named_and_earlier_stages_are_kept(tmp_path):
    out = tmp_path / "bad"
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 8, 8), dtype=np.float32))
    result = _run(["zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--data", f"npz:{bad}",
                   "--mac-budget", "0.5", "--method", "pos-cvx", "-o", str(out)])
    assert result.exit_code == 2
    assert "stage 'compress' failed" in result.output
    assert (out / "analyze" / "stage.json").is_file()
    assert not (out / "round-1" / "compress" / "stage.json").exists()


def test_cost_latency_measures_a_per_layer_table_and_budgets_latency(tmp_path, data, monkeypatch):
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path / "cache"))  # never the user's own cache
    out = tmp_path / "lat"
    result = _run(["zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--data", data, "--method", "pos-cvx",
                   "--cost", "latency", "--latency-budget-ms", "5", "--finetune-epochs", "0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "latency-table" / "stage.json").read_text())["result"]
    assert set(table["layers"]) == {"conv1", "conv2", "fc"}
    for row in table["layers"].values():
        assert row["slope_ms"] > 0 and row["original_ms"] > 0 and len(row["ranks"]) == len(row["latency_ms"]) >= 2
    assert table["cache"]["misses"] == len(list((tmp_path / "cache" / "latency-v1").glob("*.json"))) > 0
    compress_report = json.loads((out / "round-1" / "compress" / "report.json").read_text())
    assert compress_report["cost"] == "latency"
    assert compress_report["selection_info"]["predicted_latency_ms"] <= 5


def test_latency_problem_replaces_mac_costs():
    from edgecomp.ranks import LayerSpectrum, RankProblem
    from edgecomp.ranks.latency import fit_line, latency_problem

    intercept, slope = fit_line([1, 2, 4], [1.5, 2.0, 3.0])
    assert (intercept, slope) == pytest.approx((1.0, 0.5))
    layer = LayerSpectrum("a", np.array([3.0, 2.0, 1.0, 0.5]), 10, 5, 40, 20)
    problem = RankProblem((layer,), compute_budget=1e9, param_budget=1e9, fixed_compute=7)
    table = {"fixed_ms": 0.2, "layers": {"a": {"slope_ms": 0.5, "intercept_ms": 1.0, "original_ms": 2.6}}}
    lat = latency_problem(problem, table, budget_ms=2.5)
    assert lat.cost([2]) == (pytest.approx(0.2 + 1.0 + 2 * 0.5), 2 * 5)
    assert lat.layers[0].break_even_rank == 4  # 1.0 + 0.5 r >= 2.6 from r = 4 on
    assert lat.feasible([2]) and not lat.feasible([3])


def test_users_absolute_mac_budget_below_minimum_is_refused_not_clamped(tmp_path, data):
    result = _run(["zoo:tiny_cnn", "--device", "x86-host", "--target", "local", "--mac-budget", "1000",
                   "--method", "pos-cvx", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "minimum achievable" in result.output and "stage 'compress' failed" in result.output


def test_int8_for_a_gpu_device_is_measured_exactly_on_an_x86_stand_in(tmp_path, data):
    """Full-range INT8 weights (TensorRT) would saturate this host's int8 kernels if it lacks VNNI; the
    stand-in therefore runs ONNX Runtime's exact kernels and says so."""
    out = tmp_path / "i8"
    result = _run(["zoo:tiny_cnn", "--device", "jetson", "--target", "local", "--precision", "int8", "--data", data,
                   "--eval-data", data, "--method", "pos-cvx", "--mac-budget", "0.5", "--finetune-epochs", "0",
                   "--max-accuracy-drop", "1", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["final"]["export"]["artifact"].endswith("model.int8.onnx")
    verify = json.loads((out / "round-1" / "verify" / "verify.json").read_text())["report"]
    assert verify["runtime"]["session_config"] == {"session.x64quantprecision": "1"}
    assert any("exact x86 int8 kernels" in n for n in verify["notes"])



def test_a_stand_in_never_tightens_the_budget_from_its_own_latency(tmp_path, data):
    """A Jetson's 0.0005 ms budget missed on this host says nothing about the Jetson: one round, FAIL, a note."""
    result = _run(["zoo:tiny_cnn", "--device", "jetson", "--target", "local", "--data", data, "--method", "pos-cvx",
                   "--latency-budget-ms", "0.0005", "--max-rounds", "3", "--finetune-epochs", "0",
                   "-o", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert len(report["rounds"]) == 1
    assert any("not tightened from a stand-in" in n for n in report["notes"])
