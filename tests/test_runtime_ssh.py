"""Remote profiling for real: an OpenSSH server on 127.0.0.1 with throwaway keys, the agent run
through it, and the failure modes (closed port, dropped connection, missing runtime, missing python)."""

import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgecomp import runtime
from edgecomp.profiles import load_profile
from edgecomp.runtime.errors import TargetConnectionError, TargetDependencyError

from sshd_server import SSHD, free_port as _free_port  # the `sshd` fixture comes from conftest.py

pytestmark = pytest.mark.skipif(not Path(SSHD).exists(), reason=f"{SSHD} is not installed (apt-get install openssh-server)")

FAST = runtime.MeasureSettings(warmup_s=0.05, iterations=64, min_duration_s=0.05, cv_threshold=1e6)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    path = d / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 4, 4), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    x = np.random.default_rng(0).random((40, 1, 4, 4), dtype=np.float32)
    labels = net(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(d / "data.npz", x=x, y=labels)
    return {"path": path, "data": f"npz:{d / 'data.npz'}"}


def _options(sshd, **kw):
    return runtime.TargetOptions(python=kw.get("python", sys.executable), workdir=str(sshd["dir"] / "work"),
                                 ssh_options=sshd["options"], identity_file=sshd["identity"])


def _url(sshd, port=None):
    return f"ssh://{sshd['user']}@127.0.0.1:{port or sshd['port']}"


def test_full_profile_through_ssh(sshd, model):
    profile = load_profile("raspberry-pi-5")  # an ssh device; we point it at our local sshd
    report = runtime.profile_artifact(model["path"], profile, target=_url(sshd), data_spec=model["data"],
                                      percentile=90, settings=FAST, target_options=_options(sshd))
    assert report.target["transport"] == "ssh" and not report.target["stand_in"]
    assert report.runtime["version"] == ort.__version__
    assert report.runtime["providers_used"] == ["CPUExecutionProvider"]
    assert report.runtime["threads"] == profile.threads
    assert report.latency.n >= 64 and report.latency.min > 0 and report.latency.p90 >= report.latency.p50
    assert report.accuracy["top1"] == 1.0 and report.accuracy["samples"] == 40  # labels are the model's own argmax
    assert report.memory["peak_rss_bytes"] > 0
    assert len(report.target["staged"]["uploaded"]) == 3  # agent, model, inputs
    # a second run finds everything on the target under the same sha256 names and copies nothing
    again = runtime.profile_artifact(model["path"], profile, target=_url(sshd), data_spec=model["data"],
                                     settings=FAST, target_options=_options(sshd))
    assert again.target["staged"]["uploaded"] == [] and len(again.target["staged"]["reused"]) == 3
    assert list((sshd["dir"] / "work" / "runs").iterdir()) == []  # per-run outputs cleaned up


def test_verify_through_ssh_gates_and_exits(sshd, model):
    profile = load_profile("raspberry-pi-5")
    result = runtime.verify(model["path"], profile, target=_url(sshd), data_spec=model["data"],
                            latency_budget_ms=1000.0, reference_accuracy=1.0, max_accuracy_drop=0.0, settings=FAST,
                            target_options=_options(sshd))
    assert result.exit_code == 0, [g.message for g in result.gates]
    assert [g.status for g in result.gates] == ["PASS", "PASS"]


def test_closed_port_is_a_clear_connection_error(sshd, model):
    with pytest.raises(TargetConnectionError, match="connection refused") as info:
        runtime.profile_artifact(model["path"], load_profile("raspberry-pi-5"), target=_url(sshd, _free_port()),
                                 settings=FAST, target_options=_options(sshd))
    assert info.value.exit_code == 2


class DroppingProxy:
    """TCP relay to sshd that cuts every connection older than `max_age` seconds (a link going down)."""

    def __init__(self, port, max_age):
        self.target, self.max_age = port, max_age
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[tuple[float, socket.socket, socket.socket]] = []
        self.dropped = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._reaper, daemon=True).start()

    def _pipe(self, a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self):
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns.append((time.monotonic(), client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _reaper(self):
        while not self.stop.is_set():
            now = time.monotonic()
            for entry in list(self.conns):
                born, client, upstream = entry
                if now - born > self.max_age:
                    self.conns.remove(entry)
                    self.dropped += 1
                    for s in (client, upstream):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        s.close()
            time.sleep(0.05)

    def close(self):
        self.stop.set()
        self.server.close()


def test_connection_dropped_mid_run_is_reported(sshd, model):
    # stage first so the only long-lived connection is the measurement itself
    profile = load_profile("raspberry-pi-5")
    runtime.profile_artifact(model["path"], profile, target=_url(sshd), settings=FAST, target_options=_options(sshd))
    proxy = DroppingProxy(sshd["port"], max_age=2.0)
    known = sshd["dir"] / "known_hosts_proxy"
    host_pub = (sshd["dir"] / "host_key.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{proxy.port} {host_pub[0]} {host_pub[1]}\n")
    options = runtime.TargetOptions(python=sys.executable, workdir=str(sshd["dir"] / "work"),
                                    ssh_options=("-F", "/dev/null", "-o", f"UserKnownHostsFile={known}"),
                                    identity_file=sshd["identity"])
    long_run = runtime.MeasureSettings(warmup_s=0.0, iterations=10, min_duration_s=20.0, cv_threshold=1e6)
    start = time.monotonic()
    try:
        with pytest.raises(TargetConnectionError, match="dropped during the measurement") as info:
            runtime.profile_artifact(model["path"], profile, target=_url(sshd, proxy.port), settings=long_run,
                                     target_options=options)
    finally:
        proxy.close()
    assert time.monotonic() - start < 15  # noticed promptly, not after the 20 s run
    assert proxy.dropped >= 1 and info.value.exit_code == 2


def test_missing_runtime_on_target_is_named(sshd, model, tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    with pytest.raises(TargetDependencyError, match="onnxruntime not importable on target") as info:
        runtime.profile_artifact(model["path"], load_profile("raspberry-pi-5"), target=_url(sshd), settings=FAST,
                                 target_options=_options(sshd, python=str(venv / "bin" / "python")))
    assert "pip install onnxruntime there" in str(info.value) and info.value.exit_code == 2


def test_missing_python_on_target_is_named(sshd, model):
    with pytest.raises(TargetDependencyError, match="python interpreter '/no/such/python3' not found"):
        runtime.profile_artifact(model["path"], load_profile("raspberry-pi-5"), target=_url(sshd), settings=FAST,
                                 target_options=_options(sshd, python="/no/such/python3"))


def test_export_contacts_the_board_first_and_quantizes_for_its_cpu(sshd, tmp_path):
    """`edgecomp export` to an SSH board: the agent reports the board's CPU before any stage runs, and
    the INT8 weights are chosen for that CPU (recorded in the artifact's metadata)."""
    import json

    import onnx
    import yaml
    from click.testing import CliRunner

    from edgecomp.cli import main

    profile = load_profile("raspberry-pi-5").to_dict()
    profile.update(name="loopback-board", aliases=[])
    profile["target"].update(python=sys.executable, workdir=str(tmp_path / "board"))
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(profile))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((96, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 96))
    known_hosts = sshd["options"][sshd["options"].index("-o") + 1]
    url = (f"{_url(sshd)}?identity_file={sshd['identity']}&option={known_hosts}"
           "&option=StrictHostKeyChecking=yes")
    result = CliRunner().invoke(main, [
        "export", "zoo:tiny_cnn", "--profile", str(tmp_path / "board.yaml"), "--target", url, "--precision", "int8",
        "--data", f"npz:{tmp_path / 'd.npz'}", "--method", "pos-cvx", "--mac-budget", "0.5", "--finetune-epochs", "0",
        "--max-accuracy-drop", "1", "--warmup", "0.05", "--min-duration", "0.1", "--iterations", "64",
        "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code in (0, 1, 3), result.output
    assert "[target] " in result.stderr and "is reachable" in result.stderr
    report = json.loads(result.stdout)
    artifact = onnx.load(str(tmp_path / report["final"]["export"]["artifact"]))
    settings = json.loads({p.key: p.value for p in artifact.metadata_props}["edgecomp.int8_settings"])
    assert settings["chosen_for"]["runs_on"] == "target"  # the board's own CPU flags, not "unknown"
    assert report["final"]["verify"]["context"].endswith(_url(sshd))


def test_export_to_an_unreachable_board_fails_before_any_stage(tmp_path):
    from click.testing import CliRunner

    from edgecomp.cli import main

    result = CliRunner().invoke(main, ["export", "zoo:tiny_cnn", "--device", "raspberry-pi-5", "--target",
                                       f"ssh://nobody@127.0.0.1:{_free_port()}", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--target local" in result.output
    assert not (tmp_path / "out").exists()  # nothing was computed for nothing
