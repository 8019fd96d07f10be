"""Fleet verification without boards: the fleet file parser, the exit-code precedence, the parallel
runner, the aggregate and the fleet reports (the two-sshd integration is tests/test_fleet_ssh.py)."""

import json
import shutil
import threading
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgecomp.cli import EdgecompGroup
from edgecomp.cli import profile as profile_cli
from edgecomp.cli import verify as verify_cli
from edgecomp.errors import UserInputError
from edgecomp.runtime import gates as G
from edgecomp.runtime.fleet import (Board, BoardResult, FleetResult, boards_from_targets, fleet_exit_code, parse_fleet,
                                    read_fleet_file, run_on_boards, worst_latency)
from edgecomp.runtime.harness import TargetOptions
from edgecomp.runtime.report import ProfileReport, VerifyResult
from edgecomp.runtime.reports.fleet import (histogram_path_for, render_fleet_junit, render_fleet_markdown,
                                            write_fleet_reports)
from edgecomp.runtime.stats import summarize
from edgecomp.runtime.errors import TargetConnectionError

from sshd_server import free_port

GOOD_YAML = """\
boards:
  - name: pi-a
    target: ssh://pi@10.0.0.5
    identity_file: keys/pi
    ssh_options: [ConnectTimeout=5]
  - name: pi-b
    target: ssh://pi@10.0.0.6:2222
    python: /opt/py/bin/python3
    workdir: /data/edgecomp
"""


# ---- the fleet file -------------------------------------------------------------------------

def test_fleet_file_boards_take_the_command_line_options_as_defaults(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD_YAML)
    defaults = TargetOptions(python="python3.11", workdir="/tmp/w", ssh_options=("-o", "ConnectTimeout=30"),
                             identity_file="/keys/default")
    a, b = read_fleet_file(path, defaults=defaults)
    assert (a.name, a.target, b.name, b.target) == ("pi-a", "ssh://pi@10.0.0.5", "pi-b", "ssh://pi@10.0.0.6:2222")
    assert a.options.identity_file == str(tmp_path / "keys" / "pi")  # relative to the fleet file
    assert a.options.ssh_options == ("-o", "ConnectTimeout=5", "-o", "ConnectTimeout=30")  # the board's first: ssh keeps it
    assert (a.options.python, a.options.workdir) == ("python3.11", "/tmp/w")
    assert (b.options.python, b.options.workdir, b.options.identity_file) == ("/opt/py/bin/python3", "/data/edgecomp",
                                                                              "/keys/default")


def test_json_file_and_a_bare_list_read_the_same(tmp_path):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps([{"name": "a", "target": "local"}, {"name": "b", "target": "adb://SER1"}]))
    assert [(b.name, b.target) for b in read_fleet_file(path)] == [("a", "local"), ("b", "adb://SER1")]


BAD = [
    ("boards: nope\n", "non-empty list of boards"),
    ("boards: []\n", "non-empty list of boards"),
    ("- [local]\n", "expected a mapping"),
    ("boards:\n  - target: local\n", "name must be"),
    ("boards:\n  - {name: 'a b', target: local}\n", "name must be"),
    ("boards:\n  - {name: a}\n", "target must be a non-empty string"),
    ("boards:\n  - {name: a, target: 'ftp://x'}\n", "unsupported target"),
    ("boards:\n  - {name: a, target: local, port: 22}\n", "unknown key(s) ['port']"),
    ("boards:\n  - {name: a, target: local}\ndefaults: {}\n", "unknown top-level key"),
    ("boards:\n  - {name: a, target: local}\n  - {name: a, target: 'ssh://h'}\n", "two boards are named 'a'"),
    ("boards:\n  - {name: a, target: 'ssh://u@h'}\n  - {name: b, target: 'ssh://v@h:22'}\n", "are the same board"),
    ("boards:\n  - {name: a, target: local, ssh_options: 'A=b'}\n", "ssh_options must be a list"),
    ("boards:\n  - {name: a, target: local, python: 3}\n", "python must be a non-empty string"),
    ("boards:\n  - {name: a, target: local, name: b}\n", "duplicate key 'name'"),
    ("boards:\n  - {name: a, target: local\n", "invalid YAML at line"),
    ("boards:\n  - !!python/object/apply:os.system ['touch pwned']\n", "invalid YAML"),  # data only: no code runs
]


@pytest.mark.parametrize("text,message", BAD)
def test_a_bad_fleet_file_is_one_clear_line(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError) as info:
        read_fleet_file(path)
    assert message in str(info.value) and "\n" not in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_missing_fleet_file_and_bad_json(tmp_path):
    with pytest.raises(UserInputError, match="fleet file not found"):
        read_fleet_file(tmp_path / "none.yaml")
    (tmp_path / "f.json").write_text('{"boards": [{"name": "a", "name": "b"}]}')
    with pytest.raises(UserInputError, match=r"f\.json: duplicate key 'name'"):
        read_fleet_file(tmp_path / "f.json")
    (tmp_path / "g.json").write_text('{"boards": [}')
    with pytest.raises(UserInputError, match="invalid JSON at line 1"):
        read_fleet_file(tmp_path / "g.json")


def test_repeated_targets_are_boards_named_by_their_url():
    boards = boards_from_targets(["local", " ssh://pi@h:2222 "])
    assert [(b.name, b.target) for b in boards] == [("local", "local"), ("ssh://pi@h:2222", "ssh://pi@h:2222")]
    assert boards[1].slug == "ssh_pi_h_2222"
    with pytest.raises(UserInputError, match="same board"):
        boards_from_targets(["local", "local"])
    with pytest.raises(UserInputError, match="unsupported target"):
        boards_from_targets(["local", "telnet://x"])
    with pytest.raises(UserInputError, match="non-empty list"):
        parse_fleet({"boards": []})


# ---- exit code and aggregate ----------------------------------------------------------------

@pytest.mark.parametrize("codes,expected", [
    ([0, 0], 0),
    ([0, 3], 3),
    ([3, 2], 2),       # a board with no result outranks a noisy one
    ([2, 1, 3], 1),    # an unreachable board never hides a failure
    ([1, 0], 1),
    ([2, 2], 2),
])
def test_fleet_exit_code_precedence(codes, expected):
    assert fleet_exit_code(codes) == expected


def fake_result(board: str, level_ms: float, budget_ms: float, n: int = 200) -> VerifyResult:
    samples = level_ms * (1 + 0.02 * np.random.default_rng(len(board)).random(n))
    stats = summarize(samples, percentiles=(90,), cv_threshold=1e6)
    gates = [G.latency_gate(stats, budget_ms, 90), G.skipped("accuracy drop", "random inputs")]
    report = ProfileReport(
        artifact={"path": "m.onnx", "sha256": "0" * 64, "kind": "onnx", "size_bytes": 10}, device={"name": "pi5"},
        target={"url": f"ssh://{board}"}, runtime={"name": "onnxruntime", "version": "1.0"},
        settings={"batch_size": 1, "warmup_s": 0.0, "iterations": n, "min_duration_s": 0.0, "confidence": 0.99},
        inputs={"source": "random", "samples": 16}, latency=stats, timing={"loop_s": 0.5, "warmup_s": 0.1}, memory={})
    return VerifyResult(G.exit_code(gates), gates, report)


def fleet_of(*results) -> FleetResult:
    return FleetResult("verify", "pi5", 90.0, list(results))


def test_aggregate_names_the_worst_board_and_counts_verdicts():
    fast = BoardResult(Board("fast", "ssh://fast"), result=fake_result("fast", 1.0, budget_ms=3.0))
    slow = BoardResult(Board("slow", "ssh://slow"), result=fake_result("slow", 5.0, budget_ms=3.0))
    gone = BoardResult(Board("gone", "ssh://gone"), error="cannot reach ssh://gone: connection refused")
    fleet = fleet_of(fast, slow, gone)
    agg = fleet.aggregate()
    assert agg["verdicts"] == {"fast": "PASS", "slow": "FAIL", "gone": "ERROR"}
    assert (agg["passed"], agg["failed"], agg["inconclusive"], agg["could_not_run"]) == (1, 1, 0, 1)
    worst = agg["worst_latency"]
    assert worst["board"] == "slow" and worst["budget_ms"] == 3.0 and worst["status"] == "FAIL"
    assert worst["upper_bound_ms"] == slow.result.gates[0].details["upper_bound_ms"] >= worst["estimate_ms"] > 5.0
    assert fleet.exit_code == 1 and fleet.verdict == "FAIL"
    assert fleet_of(fast, gone).exit_code == 2 and fleet_of(fast).exit_code == 0
    doc = json.loads(json.dumps(fleet.to_dict()))
    assert doc["format"] == "edgecomp-fleet-report/1" and [b["name"] for b in doc["boards"]] == ["fast", "slow", "gone"]
    assert doc["boards"][2]["error"].startswith("cannot reach") and doc["boards"][0]["result"]["verdict"] == "PASS"


def test_worst_case_without_a_budget_uses_the_samples_bounds():
    quick = BoardResult(Board("a", "local"), result=fake_result("a", 2.0, 100).report)
    slower = BoardResult(Board("b", "ssh://b"), result=fake_result("bb", 4.0, 100).report)
    worst = worst_latency([quick, slower], 95.0)
    assert worst["board"] == "b" and worst["budget_ms"] is None and worst["percentile"] == 95.0
    assert worst["upper_bound_ms"] >= worst["estimate_ms"] >= 4.0
    assert FleetResult("profile", "pi5", 95.0, [quick, slower]).verdict == "MEASURED"


def test_junit_has_one_testcase_per_board_per_gate_and_markdown_every_board():
    fleet = fleet_of(BoardResult(Board("fast", "ssh://fast"), result=fake_result("fast", 1.0, 3.0)),
                     BoardResult(Board("slow", "ssh://slow"), result=fake_result("slow", 5.0, 3.0)),
                     BoardResult(Board("gone", "ssh://gone"), error="cannot reach ssh://gone"))
    root = ET.fromstring(render_fleet_junit(fleet))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["edgecomp.verify.pi5.fast", "edgecomp.verify.pi5.slow",
                                               "edgecomp.verify.pi5.gone"]
    assert [len(s.findall("testcase")) for s in suites] == [2, 2, 1]
    assert suites[1].find("testcase/failure") is not None and suites[0].find("testcase/failure") is None
    assert suites[2].find("testcase/error").get("type") == "CouldNotRun"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("5", "1", "1", "2")
    md = render_fleet_markdown(fleet)
    assert md.startswith("## edgecomp verify, fleet of 3 boards (pi5): ❌ FAIL")
    for name in ("fast", "slow", "gone"):
        assert f"| {name} | ssh://{name} |" in md and f"## board {name}" in md
    assert "Worst case: **slow**" in md and "1 passed, 1 failed, 0 inconclusive, 1 could not run; exit 1" in md
    assert histogram_path_for("out/lat.png", "fast").as_posix() == "out/lat.fast.png"


def test_fleet_report_files_cover_every_board(tmp_path):
    fleet = fleet_of(BoardResult(Board("fast", "ssh://fast"), result=fake_result("fast", 1.0, 3.0)),
                     BoardResult(Board("gone", "ssh://gone"), error="cannot reach ssh://gone"))
    written = write_fleet_reports(fleet, json_path=tmp_path / "f.json", histogram_path=tmp_path / "lat.png")
    assert sorted(p.name for p in written) == ["f.json", "lat.fast.png"]  # no histogram for a board without samples
    assert json.loads((tmp_path / "f.json").read_text())["aggregate"]["could_not_run"] == 1
    assert Board("ssh://u@h:22?identity_file=/k", "ssh://u@h:22?identity_file=/k").slug == "ssh_u_h_22"


# ---- running boards in parallel -------------------------------------------------------------

def test_boards_run_at_once_and_an_error_stops_only_its_board():
    boards = [Board("a", "local"), Board("b", "ssh://b"), Board("c", "ssh://c")]
    started = threading.Barrier(3, timeout=10)  # breaks unless all three boards run at the same time

    def work(board):
        started.wait()
        if board.name == "b":
            raise TargetConnectionError("cannot reach ssh://b: connection refused")
        return board.name.upper()

    results = run_on_boards(boards, work)
    assert [(r.board.name, r.result, r.error) for r in results] == [
        ("a", "A", None), ("b", None, "cannot reach ssh://b: connection refused"), ("c", "C", None)]


def test_a_bug_in_one_board_is_raised_not_reported_as_could_not_run():
    def work(board):
        if board.name == "b":
            raise KeyError("bug")
        return 1

    with pytest.raises(KeyError, match="bug"):
        run_on_boards([Board("a", "local"), Board("b", "ssh://b")], work)


# ---- the CLI --------------------------------------------------------------------------------

def invoke(*args):
    group = EdgecompGroup("edgecomp")
    group.add_command(verify_cli.command)
    group.add_command(profile_cli.command)
    return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet") / "tiny.onnx"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 4, 4), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


FAST = ["--warmup", "0.02", "--min-duration", "0.02", "--iterations", "64", "--cv-threshold", "1e6"]


@pytest.mark.parametrize("extra,message", [
    (["--fleet", "missing.yaml"], "fleet file not found"),
    (["--fleet", "fleet.yaml", "--target", "local"], "either --fleet FILE or --target"),
    (["--target", "local", "--target", "local"], "are the same board"),
])
def test_cli_refuses_bad_fleets_with_exit_2(tiny, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fleet.yaml").write_text("boards: [{name: a, target: local}]\n")
    run = invoke("verify", tiny, "--device", "x86-host", *extra, "--junit", "j.xml")
    assert run.exit_code == 2 and message in run.output, run.output
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite/testcase/error") is not None  # CI sees why


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client (ssh) is not installed")
def test_cli_unreachable_board_beside_a_passing_one_exits_2_with_both_reported(tiny, tmp_path):
    closed = f"ssh://nobody@127.0.0.1:{free_port()}"
    run = invoke("verify", tiny, "--device", "x86-host", *FAST, "--latency-budget-ms", "1000", "--target", "local",
                 "--target", closed, "--ssh-option", "BatchMode=yes", "--json", "--report", tmp_path / "fleet.json")
    assert run.exit_code == 2, run.output
    doc = json.loads(run.output)
    assert doc == json.loads((tmp_path / "fleet.json").read_text())
    assert doc["aggregate"]["verdicts"] == {"local": "PASS", closed: "ERROR"}
    assert "connection refused" in doc["boards"][1]["error"]
    assert doc["boards"][0]["result"]["report"]["target"]["url"] == "local"


def test_cli_one_target_keeps_the_single_board_output(tiny, tmp_path):
    run = invoke("verify", tiny, "--device", "x86-host", *FAST, "--latency-budget-ms", "1000", "--target", "local",
                 "--json")
    assert run.exit_code == 0, run.output
    doc = json.loads(run.output)
    assert doc["format"].startswith("edgecomp-verify-report/") and "boards" not in doc
