"""`edgecomp verify` / `edgecomp profile` end to end on this machine: exit codes 0/1/2/3, the report
files (JSON, Markdown, JUnit, PNG), accuracy gating against a reference, bad inputs."""

import json
import os
import socket
import textwrap
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgecomp.cli import EdgecompGroup
from edgecomp.cli import profile as profile_cli
from edgecomp.cli import verify as verify_cli

FAST = ["--warmup", "0.02", "--min-duration", "0.02", "--iterations", "64", "--target", "local"]
QUIET = ["--cv-threshold", "1e6"]  # this test machine's noise must not decide the gate


def cli():
    group = EdgecompGroup("edgecomp")
    group.add_command(verify_cli.command)
    group.add_command(profile_cli.command)
    return group


def invoke(*args):
    return CliRunner().invoke(cli(), [str(a) for a in args], catch_exceptions=False)


MODEL_PY = textwrap.dedent('''
    import torch
    from torch import nn

    def build(seed=0):
        g = torch.Generator().manual_seed(seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 6))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        return net.eval()

    def reference():
        return build(0)

    def other():
        return build(1)
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "nets.py").write_text(MODEL_PY)
    ns: dict = {}
    exec(compile(MODEL_PY, "nets", "exec"), ns)
    x = np.random.default_rng(0).random((50, 1, 4, 4), dtype=np.float32)
    ref = ns["reference"]()
    labels = ref(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(d / "data.npz", x=x, y=labels)
    np.savez(d / "unlabelled.npz", x=x)
    for name in ("reference", "other"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ns[name](), torch.zeros(1, 1, 4, 4), str(d / f"{name}.onnx"), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
    return d


def test_verify_within_budget_exits_0_and_writes_every_report(files, tmp_path):
    out = tmp_path / "reports"
    result = invoke("verify", files / "reference.onnx", "--device", "x86-host", *FAST, *QUIET,
                    "--latency-budget-ms", "1000", "--percentile", "90",
                    "--report", out / "r.json", "--markdown", out / "s.md", "--junit", out / "j.xml",
                    "--histogram", out / "h.png")
    assert result.exit_code == 0, result.output
    assert "verdict: PASS" in result.output

    doc = json.loads((out / "r.json").read_text())
    assert doc["verdict"] == "PASS" and doc["exit_code"] == 0
    rep = doc["report"]
    for key in ("artifact", "device", "target", "runtime", "settings", "inputs", "latency", "timing", "memory"):
        assert key in rep
    lat = rep["latency"]
    assert lat["n"] >= 64 and len(lat["samples_ms"]) == lat["n"]  # raw times kept
    assert lat["percentiles"]["90"]["upper_bound"] >= lat["p90"] >= lat["min"]
    assert rep["runtime"]["name"] == "onnxruntime" and rep["runtime"]["providers_used"] == ["CPUExecutionProvider"]
    assert rep["artifact"]["sha256"] and rep["artifact"]["precision"] == "fp32"
    gate = doc["gates"][0]
    assert gate["status"] == "PASS" and gate["measured"] == lat["percentiles"]["90"]["upper_bound"]

    md = (out / "s.md").read_text()
    assert "| Gate | Status |" in md and "✅ PASS" in md and "upper bound" in md

    root = ET.parse(out / "j.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 2  # latency + (skipped) accuracy
    assert root.find(".//testsuite").get("failures") == "0"
    assert cases[1].find("skipped") is not None

    assert (out / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_over_budget_exits_1_with_a_junit_failure(files, tmp_path):
    result = invoke("verify", files / "reference.onnx", "--device", "x86-host", *FAST, *QUIET,
                    "--latency-budget-ms", "0.000001", "--junit", tmp_path / "j.xml")
    assert result.exit_code == 1, result.output
    failure = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase/failure")
    assert failure is not None and "budget" in failure.get("message")


def test_verify_too_few_samples_exits_3(files, tmp_path):
    # --max-duration cuts the timed phase after one inference: p90 cannot be bounded from 1 sample
    result = invoke("verify", files / "reference.onnx", "--device", "x86-host", *FAST, "--max-duration", "1e-6",
                    "--latency-budget-ms", "1000", "--junit", tmp_path / "j.xml")
    assert result.exit_code == 3, result.output
    assert "INCONCLUSIVE" in result.output and "needs >= 64" in result.output
    error = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase/error")
    assert error is not None and error.get("type") == "Inconclusive"


def test_verify_unstable_run_widens_instead_of_vetoing(files):
    # every run is "unstable" at this threshold: the bounds are widened, and a far budget still decides
    result = invoke("verify", files / "reference.onnx", "--device", "x86-host", *FAST, "--cv-threshold", "1e-9",
                    "--latency-budget-ms", "1000")
    assert result.exit_code == 0, result.output
    assert "widened bounds" in result.output and "UNSTABLE" in result.output
    over = invoke("verify", files / "reference.onnx", "--device", "x86-host", *FAST, "--cv-threshold", "1e-9",
                  "--latency-budget-ms", "0.000001")
    assert over.exit_code == 1, over.output
    # --allow-unstable keeps the i.i.d. bounds and only warns
    warned = invoke("verify", files / "reference.onnx", "--device", "x86-host", *FAST, "--cv-threshold", "1e-9",
                    "--latency-budget-ms", "1000", "--allow-unstable")
    assert warned.exit_code == 0 and "warning: unstable" in warned.output and "widened bounds" not in warned.output


def test_accuracy_gate_against_the_reference_model(files):
    common = ["--device", "x86-host", *FAST, *QUIET, "--latency-budget-ms", "1000", "--data", f"npz:{files / 'data.npz'}",
              "--reference", f"{files / 'nets.py'}:reference"]
    same = invoke("verify", files / "reference.onnx", *common, "--json")
    assert same.exit_code == 0, same.output
    doc = json.loads(same.output)
    acc = next(g for g in doc["gates"] if g["name"] == "accuracy drop")
    assert acc["status"] == "PASS" and acc["details"]["paired"] and acc["details"]["reference_top1"] == 1.0
    assert doc["report"]["agreement"]["top1_agreement"] == 1.0
    worse = invoke("verify", files / "other.onnx", *common)
    assert worse.exit_code == 1, worse.output
    assert "[FAIL] accuracy drop" in worse.output


def test_unlabelled_data_gates_on_agreement(files):
    result = invoke("verify", files / "other.onnx", "--device", "x86-host", *FAST, *QUIET,
                    "--latency-budget-ms", "1000", "--data", f"npz:{files / 'unlabelled.npz'}",
                    "--reference", f"{files / 'nets.py'}:reference", "--json")
    assert result.exit_code == 1
    gate = next(g for g in json.loads(result.output)["gates"] if g["name"].startswith("accuracy"))
    assert "agreement" in gate["name"] and gate["status"] == "FAIL"


def test_compare_runs_pytorch_and_onnxruntime(files):
    result = invoke("verify", files / "reference.onnx", "--device", "x86-host", *FAST, *QUIET,
                    "--latency-budget-ms", "1000", "--data", f"npz:{files / 'data.npz'}",
                    "--reference", f"{files / 'nets.py'}:reference", "--compare", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    cmp = doc["report"]["compare"]
    assert cmp["passed"] and len(cmp["runs"]) >= 2 and cmp["pairs"][0]["max_abs"] < 1e-4
    assert any(g["name"] == "output agreement" and g["status"] == "PASS" for g in doc["gates"])


def test_stand_in_is_labelled(files):
    result = invoke("profile", files / "reference.onnx", "--device", "raspberry-pi-5", *FAST, "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.output)
    assert rep["target"]["stand_in"] and "stand-in" in rep["target"]["note"]
    # the profile's session settings are applied, but never more threads than this host has cores
    cores = os.cpu_count() or 1
    assert rep["runtime"]["threads"] == min(4, cores)
    assert (cores < 4) == any("this stand-in host has" in n for n in rep["notes"])


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["missing", "corrupt", "unreachable", "provider", "suffix"])
def test_could_not_run_exits_2(files, tmp_path, case):
    artifact = files / "reference.onnx"
    extra = []
    if case == "missing":
        artifact = tmp_path / "nope.onnx"
    elif case == "corrupt":
        artifact = tmp_path / "corrupt.onnx"
        artifact.write_bytes(b"\x08\x07garbage that is not a model")
    elif case == "suffix":
        artifact = tmp_path / "model.bin"
        artifact.write_bytes(b"x")
    elif case == "provider":
        extra = ["--providers", "NnapiExecutionProvider"]
    args = ["verify", artifact, "--device", "x86-host", *FAST, "--junit", tmp_path / "j.xml", *extra]
    if case == "unreachable":
        args[args.index("local")] = f"ssh://nobody@127.0.0.1:{_closed_port()}"
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    expected = {"missing": "not found", "corrupt": "ONNX", "unreachable": "connection refused",
                "provider": "NnapiExecutionProvider", "suffix": "cannot measure"}[case]
    assert expected in result.output
    error = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase/error")
    assert error is not None and error.get("type") == "CouldNotRun"


def test_device_is_required():
    result = invoke("verify", "x.onnx")
    assert result.exit_code == 2 and "--device" in result.output


def test_compressed_outdir_is_exported_and_verified(tmp_path):
    from edgecomp.factor import save_compressed
    from edgecomp.models import load_model

    loaded = load_model("zoo:tiny_cnn")
    outdir = tmp_path / "out"
    save_compressed(outdir, loaded.module, {"source": {"spec": "zoo:tiny_cnn", "weights": None},
                                             "scheme": "channel", "ranks": {}, "input_shape": [1, 1, 28, 28],
                                             "num_classes": 10})
    x = np.random.default_rng(1).random((30, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        y = loaded.module(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    result = invoke("verify", outdir, "--device", "x86-host", *FAST, *QUIET, "--latency-budget-ms", "1000",
                    "--data", f"npz:{tmp_path / 'd.npz'}", "--json")
    assert result.exit_code == 0, result.output
    assert (outdir / "model.onnx").is_file()
    doc = json.loads(result.output)
    assert doc["report"]["artifact"]["exported_now"]
    acc = next(g for g in doc["gates"] if g["name"] == "accuracy drop")
    assert acc["details"]["reference_source"].startswith("zoo:tiny_cnn") and acc["details"]["paired"]


def test_outdir_falls_back_to_report_json_when_the_reference_cannot_be_built(tmp_path):
    from edgecomp.factor import save_compressed
    from edgecomp.models import load_model

    loaded = load_model("zoo:tiny_cnn")
    outdir = tmp_path / "out"
    save_compressed(outdir, loaded.module, {"source": {"spec": "zoo:tiny_cnn", "weights": str(tmp_path / "gone.pt")},
                                             "scheme": "channel", "ranks": {}, "input_shape": [1, 1, 28, 28]})
    (outdir / "report.json").write_text(json.dumps({"original_accuracy": 0.9}))
    x = np.random.default_rng(2).random((20, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        y = loaded.module(torch.from_numpy(x)).argmax(1).numpy()
    y[:4] = (y[:4] + 1) % 10  # the artifact gets 16/20 = 0.8 right: a 0.1 drop against 0.9
    np.savez(tmp_path / "d.npz", x=x, y=y)
    result = invoke("verify", outdir, "--device", "x86-host", *FAST, *QUIET, "--latency-budget-ms", "1000",
                    "--data", f"npz:{tmp_path / 'd.npz'}", "--max-accuracy-drop", "0.05", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    acc = next(g for g in doc["gates"] if g["name"] == "accuracy drop")
    assert acc["status"] == "FAIL" and not acc["details"]["paired"]
    assert acc["details"]["reference_source"] == "report.json original_accuracy"
    assert acc["measured"] == pytest.approx(0.1)
    assert any("could not be run" in n for n in doc["report"]["notes"])
