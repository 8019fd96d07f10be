"""User journeys through the installed `edgecomp` command, in subprocesses, with realistic settings.

These tests run what a user types: the console script installed next to this interpreter (as
`pip install -e .` or a wheel puts it), in a scratch working directory, with the environment of
the test run. Nothing is imported from edgecomp here except to locate shipped files, so a journey
breaks exactly when the user's would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
JOURNEY_TIMEOUT_S = 1200  # a hang guard, not a timing assertion


def edgecomp_executable() -> str:
    """The installed console script (the venv's bin/edgecomp); PATH's `edgecomp` as a fallback."""
    beside = Path(sys.executable).with_name("edgecomp")
    found = str(beside) if beside.is_file() else shutil.which("edgecomp")
    if not found:
        pytest.fail("the `edgecomp` command is not installed: run `pip install -e .` first")
    return found


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (f"$ {shlex.join(self.args)}\nexit {self.returncode}\n--- stdout ---\n{self.stdout[-4000:]}"
                f"\n--- stderr ---\n{self.stderr[-4000:]}")


def edgecomp(*args: str, cwd: Path, timeout: float = JOURNEY_TIMEOUT_S) -> Run:
    """Run `edgecomp ARGS` in `cwd` as a user would (no terminal, so no progress bars)."""
    argv = [edgecomp_executable(), *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return Run(argv, done.returncode, done.stdout, done.stderr)


def readme_first_command() -> list[list[str]]:
    """The `edgecomp ...` steps of README.md's first shell block, exactly as written there.

    The block's other steps (apt-get, venv, pip) are what .ci/run does before the tests run.
    """
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    if not blocks:
        pytest.fail("README.md has no ```sh block")
    steps = [shlex.split(part) for part in blocks[0].replace("\\\n", " ").split("&&")]
    commands = [step for step in steps if step and step[0] == "edgecomp"]
    if not commands:
        pytest.fail("README.md's first command runs no `edgecomp` step")
    return commands


def shipped_weights() -> Path:
    from edgecomp.pipeline.export import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS
