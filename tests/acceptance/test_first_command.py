"""The README's first command, exactly as written there, and a re-run after an artifact is corrupted."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import onnx
import pytest

from journey import Run, edgecomp, readme_first_command

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, list[list[str]], Run]:
    cwd = tmp_path_factory.mktemp("newcomer")
    commands = readme_first_command()
    run = None
    for argv in commands:
        run = edgecomp(*argv[1:], cwd=cwd)
        assert run.returncode in (0, 1), str(run)
    return cwd, commands, run


def _report(cwd: Path) -> dict:
    return json.loads((cwd / "edgecomp-out" / "report.json").read_text())


def test_readme_first_command_compresses_finetunes_exports_and_decides(first_run):
    cwd, _, run = first_run
    report = _report(cwd)
    assert report["exit_code"] == run.returncode and report["verdict"] in ("PASS", "FAIL")
    # a real compression under a budget: the built-in model does not fit the device
    assert not report["analysis"]["fits"]
    first = report["rounds"][0]["compress"]
    assert not first.get("skipped") and first["method"] == "cobla"
    assert first["macs"] <= report["analysis"]["mac_budget"] < report["analysis"]["original_macs"]
    # the device has no memory budget: unconstrained, not a crash
    assert report["analysis"]["memory_budget_source"] == "none"
    # accuracy of the original, before fine-tuning, and after, all on the test split
    final = report["final"]["compress"]
    for key in ("original_accuracy", "accuracy_before_finetune", "accuracy"):
        assert 0.5 < final[key] <= 1.0, key
    # the lighter built-in settings are recorded as what they are
    assert "lighter settings" in json.dumps(report)
    # export and verify happened, and the gate decided both of its questions
    assert Path(cwd / report["final"]["export"]["artifact"]).is_file()
    gates = {g["name"].split()[0]: g["status"] for g in report["final"]["verify"]["gates"]}
    assert gates["latency"] in ("PASS", "FAIL") and gates["accuracy"] in ("PASS", "FAIL")
    html = (cwd / "edgecomp-out" / "report.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html
    # what the user reads: the verdict, the compression and the accuracies
    assert report["verdict"] in run.stdout and "cobla" in run.stdout


def test_rerun_after_corrupting_the_artifact_redoes_export_and_verify(first_run, tmp_path):
    cwd, commands, _ = first_run
    copy = tmp_path / "rerun"
    shutil.copytree(cwd, copy)
    onnx_path = copy / "edgecomp-out" / "round-1" / "export" / "model.onnx"
    data = onnx_path.read_bytes()
    onnx_path.write_bytes(data[: len(data) // 3])  # truncated, as a full disk or a bad copy leaves it

    run = edgecomp(*commands[-1][1:], cwd=copy)
    assert run.returncode in (0, 1), str(run)
    assert "[compress] reusing" in run.stderr, str(run)  # untouched stages are reused ...
    assert "[export] redoing" in run.stderr and "model.onnx" in run.stderr, str(run)  # ... the damaged one is not
    onnx.checker.check_model(onnx.load(str(onnx_path)))  # whole again
    report = _report(copy)
    assert Path(copy / report["final"]["export"]["artifact"]).resolve() == onnx_path.resolve()
    # the verdict is about the file now on disk: verify is reused only if it measured these very bytes
    verify_stage = json.loads((copy / "edgecomp-out" / "round-1" / "verify" / "stage.json").read_text())
    assert verify_stage["inputs"]["artifact_sha"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()

    (copy / "edgecomp-out" / "round-1" / "verify" / "verify.json").write_text("{}")  # a damaged report
    again = edgecomp(*commands[-1][1:], cwd=copy)
    assert again.returncode in (0, 1), str(again)
    assert "[export] reusing" in again.stderr and "[verify] redoing" in again.stderr, str(again)
    assert json.loads((copy / "edgecomp-out" / "round-1" / "verify" / "verify.json").read_text())["verdict"]
