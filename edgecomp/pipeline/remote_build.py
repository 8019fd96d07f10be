"""Build a TensorRT engine on the target itself (engines are specific to its GPU and TensorRT)."""

from __future__ import annotations

import shlex
from pathlib import Path

from edgecomp.errors import EdgecompError


def build_engine_on_target(req, target: str, onnx_path: Path, command: list[str], engine_path: Path, log) -> Path:
    """Copy the ONNX to the target, run trtexec there, and bring the engine back (atomically)."""
    from edgecomp.io import atomic_path
    from edgecomp.runtime.transport import open_transport

    transport = open_transport(target, python=req.profile.target.python, workdir=req.profile.target.workdir)
    try:
        transport.prepare()
        remote_onnx = transport.stage(onnx_path)
        remote_dir = remote_onnx.rsplit("/", 1)[0]
        remote_engine = f"{remote_dir}/{onnx_path.stem}.{transport_safe(target)}.engine"
        argv = [command[0], f"--onnx={remote_onnx}", f"--saveEngine={remote_engine}", *command[3:]]
        log(f"[export] building the TensorRT engine on {target}: {shlex.join(argv)}")
        done = transport.shell(shlex.join(argv), timeout=1800, phase="engine build")
        if done.returncode != 0:
            tail = (done.stderr or done.stdout or "")[-2000:]
            raise EdgecompError(f"trtexec failed on {target} (exit {done.returncode}): {tail}")
        with atomic_path(engine_path) as tmp:
            transport.download(remote_engine, tmp)
        return engine_path
    finally:
        transport.close()


def transport_safe(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]
