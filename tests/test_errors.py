"""One error hierarchy, one table of exit codes: user errors are one line with their code, bugs keep
their traceback, and every module (the stdlib-only agent included) agrees on what a code means."""

import ast
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecomp import exit_codes
from edgecomp.cli import main
from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.exit_codes import ExitCode
from edgecomp.pipeline.stages import StageError, Stages
from edgecomp.runtime import agent, gates
from edgecomp.runtime import errors as runtime_errors
from edgecomp.runtime.transport.ssh import SSH_FAILURE

ROOT = Path(__file__).resolve().parents[1]


# ---- stages: user errors become StageError, bugs propagate ----------------------------------------
def _stages(tmp_path):
    return Stages(tmp_path, log=lambda _: None)


def test_a_bug_in_a_stage_propagates_with_its_own_type(tmp_path):
    def body(folder):
        raise ValueError("a bug, not bad input")

    with pytest.raises(ValueError, match="a bug, not bad input") as info:
        _stages(tmp_path).run("compress", "compress", {"x": 1}, body)
    assert not isinstance(info.value, EdgecompError)
    assert any("stage 'compress'" in note for note in getattr(info.value, "__notes__", []))
    assert not (tmp_path / "compress" / "stage.json").exists()  # an unfinished stage is not reused


def test_a_user_error_in_a_stage_becomes_a_one_line_stage_error(tmp_path):
    cause = UserInputError("--data must name a file")

    def body(folder):
        raise cause

    with pytest.raises(StageError) as info:
        _stages(tmp_path).run("convert", "convert", {}, body)
    assert str(info.value) == "stage 'convert' failed: --data must name a file"
    assert info.value.stage == "convert" and info.value.__cause__ is cause
    assert info.value.exit_code == ExitCode.COULD_NOT_RUN == 2


def test_a_stage_error_keeps_its_causes_exit_code(tmp_path):
    class Odd(EdgecompError):
        exit_code = 7

    def body(folder):
        raise Odd("refused")

    with pytest.raises(StageError) as info:
        _stages(tmp_path).run("verify", "verify", {}, body)
    assert info.value.exit_code == 7


# ---- the CLI group on the real command set -------------------------------------------------------
def test_the_cli_reports_an_internal_error_with_its_traceback(monkeypatch):
    def broken():
        raise RuntimeError("list_profiles broke")

    monkeypatch.setattr("edgecomp.cli.devices.list_profiles", broken)
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == ExitCode.INTERNAL_ERROR
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: list_profiles broke" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: internal error in edgecomp") and "please report" in last


def test_the_cli_reports_a_user_error_as_one_line(monkeypatch):
    def refused():
        raise UserInputError("no such profile directory")

    monkeypatch.setattr("edgecomp.cli.devices.list_profiles", refused)
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    assert result.stderr.strip().splitlines() == ["error: no such profile directory"]


# ---- one table of exit codes ---------------------------------------------------------------------
def test_exit_codes_have_the_documented_values():
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0), ("BUDGET_EXCEEDED", 1), ("COULD_NOT_RUN", 2), ("INCONCLUSIVE", 3), ("INTERRUPTED", 130)]
    assert exit_codes.INTERNAL_ERROR is ExitCode.COULD_NOT_RUN  # README: an internal error also exits 2


def test_the_readme_table_lists_exactly_these_codes():
    text = (ROOT / "README.md").read_text()
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == {int(c) for c in ExitCode}


def test_gates_add_up_to_the_exit_code_modules_values():
    def gate(status):
        return gates.GateResult("g", status, None, None, "", "")

    assert gates.exit_code([gate(gates.PASS), gates.skipped("s", "why")]) == ExitCode.OK
    assert gates.exit_code([gate(gates.PASS), gate(gates.INCONCLUSIVE)]) == ExitCode.INCONCLUSIVE
    assert gates.exit_code([gate(gates.INCONCLUSIVE), gate(gates.FAIL)]) == ExitCode.BUDGET_EXCEEDED
    assert type(gates.exit_code([])) is int  # stored in JSON reports as a plain number
    assert gates.verdict(ExitCode.COULD_NOT_RUN) == "ERROR"
    assert not [name for name in vars(gates) if name.startswith("EXIT_")]  # no second table


def test_harness_errors_are_edgecomp_errors_with_their_exit_code():
    for cls in (runtime_errors.TargetError, runtime_errors.TargetConnectionError,
                runtime_errors.TargetDependencyError):
        assert issubclass(cls, EdgecompError) and cls("x").exit_code == ExitCode.COULD_NOT_RUN, cls
    assert runtime_errors.MissingDependencyError("tensorrt", "pip install x").exit_code == ExitCode.COULD_NOT_RUN
    tree = ast.parse((ROOT / "runtime" / "errors.py").read_text())
    bases = {b.id for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
             for b in node.bases if isinstance(b, ast.Name)}
    assert not bases & {"Exception", "BaseException", "RuntimeError"}  # no second root


# ---- the on-device agent: its own codes, never edgecomp's meanings -------------------------------
def test_the_agents_exit_codes_do_not_collide_with_the_clis_meanings():
    assert agent.EXIT_OK == ExitCode.OK
    reserved = {
        ExitCode.BUDGET_EXCEEDED, ExitCode.INCONCLUSIVE,  # would read as a gate's verdict
        1, 2,  # Python's own: uncaught exception, cannot open the script
        126, 127, SSH_FAILURE,  # the shell's "cannot execute" / "not found", ssh's connection failure
    }
    assert agent.EXIT_ERROR not in reserved and 0 < agent.EXIT_ERROR < 126  # below the signal range


def _imported_tops(nodes) -> set[str]:
    tops = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in agent.py"
            tops.add(node.module.split(".")[0])
    return tops


def test_the_agent_imports_only_the_standard_library():
    """At module level only the stdlib (the file runs on a bare target without edgecomp). Inside the
    runners, lazily, only the runtimes it drives (numpy, onnxruntime, tensorrt, cuda-python), never edgecomp."""
    tree = ast.parse((ROOT / "runtime" / "agent.py").read_text())
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    top_level = _imported_tops(tree.body)
    assert {"json", "sys"} <= top_level and top_level <= stdlib, top_level - stdlib
    anywhere = _imported_tops(ast.walk(tree))
    dynamic = {node.args[0].value.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
               and isinstance(node.args[0].value, str)
               and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "_import")}
    runtimes = set(agent.PIP_NAMES)  # numpy, onnxruntime, tensorrt, cuda
    assert (anywhere | dynamic) - stdlib <= runtimes, (anywhere | dynamic) - stdlib - runtimes
    assert "edgecomp" not in anywhere | dynamic
