"""Bad input exits 2 with one `error:` line that says what to do, no traceback, and nothing written;
Ctrl-C exits 130. The cases are benchmarks/robustness_table.py's CASES (which also writes
docs/robustness.md): here they run in-process through click's runner (fast), Ctrl-C and one error
case in a real subprocess."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecomp.cli import main
from edgecomp.errors import UserInputError
from edgecomp.io import check_writable

ROOT = Path(__file__).resolve().parents[1]


def _load_table():
    spec = importlib.util.spec_from_file_location("robustness_table", ROOT / "benchmarks" / "robustness_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


table = _load_table()
IN_PROCESS = [case for case in table.CASES if not case.interrupt]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return table.make_fixtures(tmp_path_factory.mktemp("bad-input") / "work")


@pytest.mark.parametrize("case", IN_PROCESS, ids=[c.name for c in IN_PROCESS])
def test_bad_input_exits_2_with_one_line(case, work, monkeypatch, single_thread):
    monkeypatch.chdir(work)
    before = table.snapshot(work)
    result = CliRunner().invoke(main, list(case.args))
    outcome = table.Outcome(result.exit_code, result.stderr, table.written(work, before))
    assert table.problems(case, outcome) == [], result.stderr


def test_the_document_lists_exactly_these_cases():
    rows = table.parse_rows(table.DOC.read_text(encoding="utf-8"))
    assert [(name, command) for name, command, _ in rows] == [(c.name, c.command()) for c in table.CASES], (
        "docs/robustness.md is out of date: run python benchmarks/robustness_table.py")
    assert [code for _, _, code in rows] == [c.code for c in table.CASES]


def _subprocess(case, work, **kw):
    return table.run_subprocess(case, work, timeout=300, **kw)


def test_a_real_process_prints_one_line_and_no_traceback(work):
    case = next(c for c in table.CASES if c.name == "evaluate: label outside the model's classes")
    outcome = _subprocess(case, work)
    assert table.problems(case, outcome) == [], outcome.stderr


def test_ctrl_c_exits_130_and_leaves_nothing_half_written(work):
    case = next(c for c in table.CASES if c.interrupt)
    outcome = _subprocess(case, work)
    assert table.problems(case, outcome) == [], outcome.stderr
    assert not any(name.startswith(".out.") for name in os.listdir(work))  # no staging directory left


# ---- the writable-path check on its own ----------------------------------------------------------
def test_check_writable_creates_nothing_and_accepts_new_paths(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "out", kind="dir")
    check_writable(tmp_path / "new" / "report.json", kind="file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind, path, phrase", [
    ("dir", "afile", "exists and is not a directory"),
    ("file", "adir", "is a directory"),
    ("file", "afile/x.json", "is a file, not a directory"),
    ("file", "dangling/x.json", "broken symbolic link"),
    ("file", "loop", "symbolic link loop"),
    ("file", "x" * 240, "over the limit"),
    ("file", "y" * 256 + "/x.json", "over the limit"),
])
def test_check_writable_refuses(tmp_path, monkeypatch, kind, path, phrase):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    os.symlink("missing", tmp_path / "dangling")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(UserInputError, match=phrase) as info:
        check_writable(path, kind=kind, option="--report")
    assert str(info.value).startswith("--report ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_refuses_a_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(UserInputError, match="cannot"):
            check_writable(locked / "out", kind="dir")
    finally:
        locked.chmod(0o755)


# ---- the exit-code mapping of the CLI group ----------------------------------------------------
def _group(raise_what):
    import click

    from edgecomp.cli import EdgecompGroup

    group = EdgecompGroup("edgecomp")

    @group.command("export")
    @click.option("-o", "outdir", default="edgecomp-out")
    def export(outdir):
        raise raise_what

    return group


def test_keyboard_interrupt_exits_130_saying_what_was_kept():
    result = CliRunner().invoke(_group(KeyboardInterrupt()), ["export", "-o", "somewhere"])
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == [
        "error: interrupted: the stages finished under somewhere are kept and are reused when you run the same "
        "command again; the interrupted stage left nothing half-written"]


def test_an_internal_error_keeps_its_traceback_and_exits_2():
    """Anything that is not an EdgecompError is our bug: the traceback stays, with a request to report it."""
    result = CliRunner().invoke(_group(ZeroDivisionError("a bug, not bad input")), ["export"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "ZeroDivisionError: a bug, not bad input" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: internal error")


def test_a_file_system_refusal_is_one_line():
    refusal = OSError(28, "No space left on device", "out/model.onnx")
    result = CliRunner().invoke(_group(refusal), ["export"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: No space left on device: out/model.onnx (the file system refused; check the path, free space and "
        "permissions)"]
