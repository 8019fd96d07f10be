"""The fleet journey: a user with two boards (two real sshd on loopback, each with its own keys) writes
a fleet file, gates the shipped Fashion-MNIST model on both at once for CI, then profiles both with a
repeated --target."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from journey import edgecomp, shipped_weights
from sshd_server import sshd as sshd_fixture  # `sshd` (the first board) comes from tests/conftest.py

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def second_board(tmp_path_factory):
    """Another independent sshd (own port, host key and user key)."""
    yield from sshd_fixture.__wrapped__(tmp_path_factory)


def _known_hosts(server) -> str:
    return server["options"][server["options"].index("-o") + 1]


def test_a_fleet_of_two_ssh_boards_is_gated_then_profiled(sshd, second_board, tmp_path):
    convert = edgecomp("convert", "zoo:fmnist_cnn", "--weights", shipped_weights(), "--format", "onnx",
                       "-o", "model.onnx", cwd=tmp_path)
    assert convert.returncode == 0, str(convert)
    boards = []
    for name, server in (("pi-kitchen", sshd), ("pi-garage", second_board)):
        boards.append(f"  - name: {name}\n"
                      f"    target: ssh://{server['user']}@127.0.0.1:{server['port']}\n"
                      f"    identity_file: {server['identity']}\n"
                      f"    ssh_options: [{_known_hosts(server)}, StrictHostKeyChecking=yes]\n"
                      f"    workdir: {tmp_path / name}\n")
    (tmp_path / "fleet.yaml").write_text("boards:\n" + "".join(boards))

    gate = edgecomp("verify", "model.onnx", "--device", "raspberry-pi-5", "--fleet", "fleet.yaml",
                    "--target-python", sys.executable, "--data", "fashion-mnist:test", "--samples", "500",
                    "--reference", "zoo:fmnist_cnn", "--reference-weights", shipped_weights(),
                    "--latency-budget-ms", "1000", "--report", "fleet.json", "--junit", "fleet.xml",
                    "--markdown", "fleet.md", cwd=tmp_path)
    assert gate.returncode == 0, str(gate)
    assert "pi-kitchen" in gate.stdout and "pi-garage" in gate.stdout
    doc = json.loads((tmp_path / "fleet.json").read_text())
    assert doc["verdict"] == "PASS" and doc["aggregate"]["passed"] == 2
    assert [b["result"]["report"]["target"]["url"] for b in doc["boards"]] == [
        f"ssh://{s['user']}@127.0.0.1:{s['port']}" for s in (sshd, second_board)]
    assert all((tmp_path / name / "blobs").is_dir() for name in ("pi-kitchen", "pi-garage"))  # ran on each board
    suites = ET.parse(tmp_path / "fleet.xml").getroot().findall("testsuite")
    assert len(suites) == 2 and all(len(s.findall("testcase")) == 2 for s in suites)  # latency + accuracy each

    urls = [f"ssh://{s['user']}@127.0.0.1:{s['port']}?identity_file={s['identity']}&option={_known_hosts(s)}"
            f"&option=StrictHostKeyChecking=yes" for s in (sshd, second_board)]
    measured = edgecomp("profile", "model.onnx", "--device", "raspberry-pi-5", "--target", urls[0], "--target",
                        urls[1], "--target-python", sys.executable, "--workdir", Path(tmp_path / "shared"),
                        "--json", cwd=tmp_path)
    assert measured.returncode == 0, str(measured)
    profiled = measured.json()
    assert [b["verdict"] for b in profiled["boards"]] == ["MEASURED", "MEASURED"]
    assert profiled["aggregate"]["worst_latency"]["board"] in urls
