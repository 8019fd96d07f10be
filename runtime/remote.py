"""Drive one measurement through a transport: stage agent + model + inputs, run, parse, fetch outputs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecomp.runtime import agent as agent_module
from edgecomp.runtime.errors import TargetDependencyError, TargetError, agent_error_to_exception
from edgecomp.runtime.transport.base import Completed, Transport, python_missing_error

AGENT_FILE = Path(agent_module.__file__)
COMMAND_NOT_FOUND = 127


@dataclass
class AgentRun:
    """What came back from the target: the agent's JSON and, if asked, the outputs (and inputs it made)."""

    result: dict[str, Any]
    outputs: np.ndarray | None = None
    inputs: np.ndarray | None = None
    staged: dict[str, list[str]] = field(default_factory=dict)

    @property
    def times_ms(self) -> np.ndarray:
        return np.asarray(self.result["times_ns"], dtype=np.float64) / 1e6


def parse_agent_output(done: Completed, transport: Transport) -> dict[str, Any]:
    """The agent's result dict from its stdout, or the clearest error for what went wrong.

    The result line decides whenever it is there ({"ok": false} -> agent_error_to_exception); the exit
    status only explains its absence: 127 no python, agent.EXIT_ERROR a lost line, 128+n a signal.
    Every failure is an EdgecompError (edgecomp exit 2: could not run), whatever the agent's status."""
    line = None
    for candidate in done.stdout.splitlines():
        if candidate.startswith(agent_module.RESULT_MARKER):
            line = candidate[len(agent_module.RESULT_MARKER):]
    if line is not None:
        try:
            result = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TargetError(f"the agent on {transport.url} printed an unreadable result: {exc}") from exc
        if not result.get("ok"):
            raise agent_error_to_exception(result.get("error") or {}, transport.url)
        return result
    stderr = done.stderr.strip()
    if done.returncode == COMMAND_NOT_FOUND or ("not found" in stderr.lower() and transport.python in stderr):
        raise python_missing_error(transport, done)
    if "SyntaxError" in stderr:
        raise TargetDependencyError(
            f"python {transport.python!r} on {transport.url} is too old for the agent (needs Python >= 3.8): "
            f"{stderr.splitlines()[-1]}"
        )
    if done.returncode == agent_module.EXIT_ERROR:  # it reported a failure, but its result line was lost
        raise TargetError(f"the agent on {transport.url} reported a failure (exit status {done.returncode}) but its "
                          f"result line is missing from its output: {stderr[-500:] or done.stdout[-500:] or 'none'}")
    if done.returncode < 0 or done.returncode in (128 + 9, 128 + 15):
        raise TargetError(f"the agent on {transport.url} was killed (status {done.returncode}; out of memory?) "
                          f"{stderr[-300:]}")
    raise TargetError(f"the agent on {transport.url} failed with exit status {done.returncode}: "
                      f"{stderr[-500:] or done.stdout[-500:] or 'no output'}")


def run_agent(
    transport: Transport,
    *,
    model: Path,
    request: dict[str, Any],
    inputs: Path | None = None,
    want_outputs: bool = False,
    scratch: Path,
    timeout: float | None = None,
) -> AgentRun:
    """Stage files (by sha256), run the agent with `request` (+ model/inputs/outputs paths), fetch outputs."""
    transport.prepare()
    agent_path = transport.stage(AGENT_FILE)
    full = dict(request)
    full["model"] = transport.stage(model)
    full["inputs"] = transport.stage(inputs) if inputs is not None else None
    run_id = uuid.uuid4().hex[:12]
    if want_outputs:
        full["outputs"] = transport.run_dir(run_id) + "/outputs.npz"  # the agent creates the directory
    try:
        done = transport.run_agent(agent_path, ["--request", agent_module.encode_request(full)], timeout=timeout)
        result = parse_agent_output(done, transport)
        outputs = inputs_made = None
        if want_outputs:
            local = scratch / f"outputs-{run_id}.npz"
            transport.download(full["outputs"], local)
            with np.load(local, allow_pickle=False) as data:
                outputs = data["y"]
                inputs_made = data["x"] if "x" in data.files else None
    finally:
        if want_outputs:
            transport.remove_run_dir(run_id)
    staged = {"uploaded": list(transport.uploaded), "reused": list(transport.reused)}
    return AgentRun(result=result, outputs=outputs, inputs=inputs_made, staged=staged)


def probe_environment(transport: Transport, *, timeout: float | None = 120) -> dict[str, Any]:
    """The target's environment as its agent reports it (python, machine, CPU flags, runtimes): one
    round trip, which also proves the target is reachable and can run the agent."""
    transport.prepare()
    agent_path = transport.stage(AGENT_FILE)
    done = transport.run_agent(agent_path, ["--request", agent_module.encode_request({"action": "environment"})],
                               timeout=timeout)
    return parse_agent_output(done, transport)["environment"]

