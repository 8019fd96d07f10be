"""Target URLs, sha256 staging, agent-output parsing, and the adb transport (where adb exists)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecomp.errors import UserInputError
from edgecomp.runtime import agent
from edgecomp.runtime.errors import TargetConnectionError, TargetDependencyError, TargetError
from edgecomp.runtime.remote import parse_agent_output
from edgecomp.runtime.transport import AdbTransport, LocalTransport, SshTransport, open_transport, parse_target
from edgecomp.runtime.transport.base import Completed, Transport, run_subprocess, sha256_file
from edgecomp.runtime.transport.ssh import diagnose


def test_parse_target_forms():
    assert parse_target("local").kind == "local"
    assert parse_target("adb").kind == "adb" and parse_target("adb").serial is None
    assert parse_target("adb://emulator-5554").serial == "emulator-5554"
    t = parse_target("ssh://pi@raspberrypi.local:2222?identity_file=/k/id&option=StrictHostKeyChecking=accept-new")
    assert (t.kind, t.user, t.host, t.port, t.identity_file) == ("ssh", "pi", "raspberrypi.local", 2222, "/k/id")
    assert t.options == ("-o", "StrictHostKeyChecking=accept-new")
    assert parse_target("ssh://host").user is None and parse_target("ssh://host").port is None


@pytest.mark.parametrize("url", ["", "ftp://x", "ssh://", "ssh://u:secret@h", "ssh://h:99999", "ssh://h?bad=1",
                                 "pi@host"])
def test_parse_target_rejects_bad_urls(url):
    with pytest.raises(UserInputError):
        parse_target(url)


def test_ssh_command_line_is_batch_mode_with_keepalives(monkeypatch):
    monkeypatch.setenv("EDGECOMP_SSH_OPTIONS", "-o Compression=no")
    monkeypatch.delenv("EDGECOMP_SSH_IDENTITY", raising=False)
    t = open_transport("ssh://me@box:2200", identity_file="~/k", ssh_options=["-o", "X=y"])
    assert isinstance(t, SshTransport) and t.url == "ssh://me@box:2200"
    argv = t.argv("echo hi")
    joined = " ".join(argv)
    for part in ("BatchMode=yes", "ConnectTimeout=10", "ServerAliveInterval=15", "-p 2200", "IdentitiesOnly=yes",
                 "Compression=no", "X=y"):
        assert part in joined
    assert argv[-2:] == ["me@box", "echo hi"]
    assert "~" not in joined  # identity path expanded


@pytest.mark.parametrize("stderr, meaning", [
    ("ssh: connect to host h port 22: Connection refused", "connection refused"),
    ("ssh: connect to host h port 22: Connection timed out", "timed out"),
    ("ssh: Could not resolve hostname nope: Name or service not known", "resolve"),
    ("Host key verification failed.", "host key"),
    ("root@h: Permission denied (publickey).", "authentication"),
    ("Connection to h closed by remote host.", "closed"),
    ("client_loop: send disconnect: Broken pipe", "closed"),
])
def test_ssh_failures_are_diagnosed(stderr, meaning):
    assert meaning in diagnose(stderr)


class DirTransport(Transport):
    """A 'remote' that is a local directory, reached through sh: exercises the shared staging logic."""

    kind = "dir"

    def __init__(self, workdir):
        super().__init__(python=sys.executable, workdir=str(workdir))
        self.uploads = 0

    @property
    def url(self):
        return "dir://" + self.workdir

    def shell(self, command, *, stdin=None, timeout=None, phase="setup"):
        return run_subprocess(["/bin/sh", "-c", command], stdin=stdin, timeout=timeout, what=phase)

    def upload(self, local, remote):
        self.uploads += 1
        shutil.copyfile(local, remote)

    def download(self, remote, local):
        shutil.copyfile(remote, local)


def test_staging_copies_each_content_once_by_sha256(tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"model bytes")
    t = DirTransport(tmp_path / "remote")
    remote = t.stage(src)
    assert Path(remote).name == sha256_file(src) + ".onnx"
    assert Path(remote).read_bytes() == b"model bytes"
    t2 = DirTransport(tmp_path / "remote")  # a new session sees the blob already there
    assert t2.stage(src) == remote and t2.uploads == 0 and t2.reused
    src.write_bytes(b"changed")
    assert t2.stage(src) != remote and t2.uploads == 1
    leftovers = [p.name for p in (tmp_path / "remote" / "blobs").iterdir() if "partial" in p.name]
    assert leftovers == []


def test_local_transport_uses_files_in_place(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(b"x")
    t = LocalTransport(workdir=str(tmp_path / "wd"))
    t.prepare()
    assert t.stage(src) == str(src.resolve()) and t.python == sys.executable and t.is_local


def _marked(obj):
    import json

    return agent.RESULT_MARKER + json.dumps(obj)


def test_parse_agent_output_maps_failures_to_clear_errors(tmp_path):
    t = LocalTransport(python="python3-missing", workdir=str(tmp_path))
    ok = parse_agent_output(Completed(0, "noise\n" + _marked({"ok": True, "times_ns": [1]}), ""), t)
    assert ok["times_ns"] == [1]
    with pytest.raises(TargetDependencyError, match="onnxruntime not importable"):
        parse_agent_output(Completed(agent.EXIT_ERROR, _marked({"ok": False, "error": {
            "kind": "missing_module", "message": "onnxruntime not importable on target (py): pip install onnxruntime there"}}),
            ""), t)
    with pytest.raises(UserInputError):
        parse_agent_output(Completed(agent.EXIT_ERROR, _marked({"ok": False, "error": {"kind": "bad_model",
                                                                                     "message": "x"}}), ""), t)
    with pytest.raises(TargetError, match="result line is missing"):
        parse_agent_output(Completed(agent.EXIT_ERROR, "", ""), t)
    with pytest.raises(TargetDependencyError, match="python interpreter 'python3-missing' not found"):
        parse_agent_output(Completed(127, "", "sh: 1: exec: python3-missing: not found"), t)
    with pytest.raises(TargetDependencyError, match="too old"):
        parse_agent_output(Completed(1, "", "  File x\nSyntaxError: future feature annotations is not defined"), t)
    with pytest.raises(TargetError, match="killed"):
        parse_agent_output(Completed(-9, "", ""), t)
    with pytest.raises(TargetError, match="exit status 1"):
        parse_agent_output(Completed(1, "", "Traceback: boom"), t)


def test_a_real_agent_failure_exits_with_its_code_and_maps_to_a_user_error(tmp_path):
    """The agent process (run as on a target) exits agent.EXIT_ERROR, and the host still reads its result line."""
    t = LocalTransport(workdir=str(tmp_path))
    done = t.run_agent(str(Path(agent.__file__)), ["--request", "not-base64!"], timeout=60)
    assert done.returncode == agent.EXIT_ERROR, done.stderr
    with pytest.raises(UserInputError, match="cannot decode the request") as info:
        parse_agent_output(done, t)
    assert info.value.exit_code == 2


def test_subprocess_timeout_is_a_connection_error():
    with pytest.raises(TargetConnectionError, match="did not finish"):
        run_subprocess(["sleep", "5"], stdin=None, timeout=0.2, what="sleepy")


@pytest.mark.skipif(shutil.which("adb") is None, reason="adb (Android platform-tools) is not installed here")
def test_adb_reports_a_missing_device_clearly(tmp_path):
    devices = subprocess.run(["adb", "devices"], capture_output=True, text=True).stdout.strip().splitlines()[1:]
    if devices:
        pytest.skip("an Android device is attached; not touching it from the test suite")
    t = AdbTransport("no-such-serial", workdir="/data/local/tmp/edgecomp-test")
    with pytest.raises(TargetConnectionError, match="cannot reach adb://no-such-serial"):
        t.prepare()


def test_adb_without_the_binary_names_the_install(monkeypatch):
    if shutil.which("adb"):
        pytest.skip("adb is installed here")
    from edgecomp.errors import MissingDependencyError

    monkeypatch.delenv("EDGECOMP_ADB", raising=False)
    with pytest.raises(MissingDependencyError, match="adb"):
        open_transport("adb")
