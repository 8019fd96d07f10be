"""A fleet of two real boards: two private OpenSSH servers on 127.0.0.1 (tests/sshd_server.py), each
with its own keys and work directory, verified at once. One board is made slow (its python sleeps
20 ms in every inference) so that it alone misses the budget and the whole gate exits 1."""

import json
import sys
import textwrap
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import edgecomp
from edgecomp.cli import EdgecompGroup
from edgecomp.cli import verify as verify_cli
from edgecomp.runtime import MeasureSettings, TargetOptions

from sshd_server import SSHD, free_port, sshd as sshd_fixture  # `sshd` (board a) also comes from conftest.py

pytestmark = pytest.mark.skipif(not Path(SSHD).exists(), reason=f"{SSHD} is not installed (apt-get install openssh-server)")

FAST = MeasureSettings(warmup_s=0.05, iterations=64, min_duration_s=0.05, cv_threshold=1e6)
SLOW_MS = 20  # board b's extra time per inference


@pytest.fixture(scope="module")
def sshd_b(tmp_path_factory):
    """A second, independent sshd (own port, host key and user key): the fleet's other board."""
    yield from sshd_fixture.__wrapped__(tmp_path_factory)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet-model")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 4, 4), str(d / "tiny.onnx"), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    x = np.random.default_rng(0).random((40, 1, 4, 4), dtype=np.float32)
    np.savez(d / "data.npz", x=x, y=net(torch.from_numpy(x)).argmax(1).numpy())
    # a slow board: its python imports a sitecustomize that makes every ONNX Runtime inference 20 ms slower
    (d / "slow").mkdir()
    (d / "slow" / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import time
        import onnxruntime
        _run = onnxruntime.InferenceSession.run
        def run(self, *args, **kwargs):
            time.sleep({SLOW_MS / 1000})
            return _run(self, *args, **kwargs)
        onnxruntime.InferenceSession.run = run
    """))
    slow_python = d / "slow-python"
    slow_python.write_text(f"#!/bin/sh\nPYTHONPATH={d / 'slow'} exec {sys.executable} \"$@\"\n")
    slow_python.chmod(0o755)
    return {"path": d / "tiny.onnx", "data": f"npz:{d / 'data.npz'}", "slow_python": str(slow_python)}


def board(name, server, workdir, **extra):
    """A fleet-file entry for one loopback sshd: its own key, known_hosts and work directory."""
    known_hosts = server["options"][server["options"].index("-o") + 1]
    return {"name": name, "target": f"ssh://{server['user']}@127.0.0.1:{server['port']}",
            "identity_file": server["identity"], "ssh_options": [known_hosts, "StrictHostKeyChecking=yes"],
            "workdir": str(workdir), "python": sys.executable, **extra}


def test_two_boards_are_verified_at_once_each_with_its_own_result(sshd, sshd_b, model, tmp_path):
    fleet = [board("board-a", sshd, tmp_path / "a"), board("board-b", sshd_b, tmp_path / "b")]
    result = edgecomp.verify(model["path"], device="raspberry-pi-5", fleet=fleet, data=model["data"],
                             latency_budget_ms=1000.0, reference_accuracy=1.0, max_accuracy_drop=0.0, settings=FAST,
                             target_options=TargetOptions(ssh_options=("-F", "/dev/null")))
    assert result.exit_code == 0, [(b.board.name, b.error) for b in result.boards]
    a, b = result.boards
    for entry, server in ((a, sshd), (b, sshd_b)):
        report = entry.result.report
        assert report.target["url"].endswith(f":{server['port']}") and report.target["transport"] == "ssh"
        assert [g.status for g in entry.result.gates] == ["PASS", "PASS"]
        assert report.accuracy["top1"] == 1.0 and report.latency.n >= 64
    assert sshd["port"] != sshd_b["port"]
    # the agent ran on each board, in its own work directory
    assert list((tmp_path / "a" / "blobs").iterdir()) and list((tmp_path / "b" / "blobs").iterdir())
    agg = result.aggregate()
    assert agg["verdicts"] == {"board-a": "PASS", "board-b": "PASS"} and agg["passed"] == 2
    bounds = {e.board.name: e.result.gates[0].details["upper_bound_ms"] for e in result.boards}
    assert agg["worst_latency"]["upper_bound_ms"] == max(bounds.values())
    assert agg["worst_latency"]["board"] == max(bounds, key=bounds.get)


def test_one_slow_board_fails_the_fleet_gate_and_an_unreachable_one_does_not_hide_it(sshd, sshd_b, model, tmp_path):
    boards = [board("board-a", sshd, tmp_path / "a"),
              board("board-b", sshd_b, tmp_path / "b", python=model["slow_python"]),
              board("board-c", sshd, tmp_path / "c", target=f"ssh://{sshd['user']}@127.0.0.1:{free_port()}")]
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(json.dumps({"boards": boards}))  # JSON is YAML: the .yaml reader takes it
    group = EdgecompGroup("edgecomp")
    group.add_command(verify_cli.command)
    args = ["verify", model["path"], "--device", "raspberry-pi-5", "--fleet", fleet_file, "--ssh-option",
            "ConnectTimeout=5", "--warmup", "0.05", "--min-duration", "0.05", "--iterations", "64",
            "--cv-threshold", "1e6", "--latency-budget-ms", str(SLOW_MS / 2), "--junit", tmp_path / "fleet.xml",
            "--markdown", tmp_path / "fleet.md", "--json"]
    # -F /dev/null keeps the user's ssh config out, as the sshd fixture's options do
    run = CliRunner(env={"EDGECOMP_SSH_OPTIONS": "-F /dev/null"}).invoke(group, [str(a) for a in args],
                                                                        catch_exceptions=False)
    assert run.exit_code == 1, run.output
    doc = json.loads(run.output)
    assert doc["aggregate"]["verdicts"] == {"board-a": "PASS", "board-b": "FAIL", "board-c": "ERROR"}
    assert doc["aggregate"]["worst_latency"]["board"] == "board-b"
    assert doc["aggregate"]["worst_latency"]["lower_bound_ms"] > SLOW_MS / 2
    assert "connection refused" in doc["boards"][2]["error"]
    suites = ET.parse(tmp_path / "fleet.xml").getroot().findall("testsuite")
    assert [s.find("properties/property[@name='board']").get("value") for s in suites] == [
        "board-a", "board-b", "board-c"]
    assert suites[1].find("testcase/failure") is not None and suites[0].find("testcase/failure") is None
    assert suites[2].find("testcase/error").get("type") == "CouldNotRun"
    md = (tmp_path / "fleet.md").read_text()
    assert "❌ FAIL" in md.splitlines()[0] and all(f"## board board-{x}" in md for x in "abc")


def board_url(server) -> str:
    """A target URL that carries its own key and known_hosts (?identity_file=&option=), for --target."""
    known_hosts = server["options"][server["options"].index("-o") + 1]
    return (f"ssh://{server['user']}@127.0.0.1:{server['port']}?identity_file={server['identity']}"
            f"&option={known_hosts}&option=StrictHostKeyChecking=yes")


def test_profile_with_a_repeated_target_measures_both_boards(sshd, sshd_b, model, tmp_path):
    from edgecomp.cli import profile as profile_cli

    group = EdgecompGroup("edgecomp")
    group.add_command(profile_cli.command)
    args = ["profile", model["path"], "--device", "raspberry-pi-5", "--target", board_url(sshd), "--target",
            board_url(sshd_b), "--target-python", sys.executable, "--workdir", tmp_path / "w", "--warmup", "0.02",
            "--min-duration", "0.02", "--iterations", "64", "--percentile", "95", "--json"]
    run = CliRunner(env={"EDGECOMP_SSH_OPTIONS": "-F /dev/null"}).invoke(group, [str(a) for a in args],
                                                                        catch_exceptions=False)
    assert run.exit_code == 0, run.output
    doc = json.loads(run.output)
    assert doc["command"] == "profile" and doc["verdict"] == "MEASURED"
    ports = [b["result"]["target"]["url"].rsplit(":", 1)[1] for b in doc["boards"]]
    assert ports == [str(sshd["port"]), str(sshd_b["port"])]
    assert all(b["result"]["latency"]["n"] >= 64 for b in doc["boards"])
    worst = doc["aggregate"]["worst_latency"]
    assert worst["percentile"] == 95 and worst["board"] in (board_url(sshd), board_url(sshd_b))
