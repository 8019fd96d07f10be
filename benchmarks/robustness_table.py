"""The CLI's bad-input cases and what each gives, written to docs/robustness.md.

Each case is a mistake a user makes (an output path that cannot be written, data that does not fit
the model, corrupt weights, an option out of range, a broken device profile) or a Ctrl-C. Each must
exit 2 (130 for Ctrl-C) with exactly one `error: ...` line on stderr that says what to do, no
traceback, and nothing written. This script runs every case as a user does (`python -m edgecomp
...` in a subprocess, in a scratch directory holding the fixtures) and writes the table;
tests/test_bad_input.py runs the same CASES in-process, and checks that the table lists exactly them.

    python benchmarks/robustness_table.py           # run the cases, write docs/robustness.md
    python benchmarks/robustness_table.py --check   # also exit 1 when a case misbehaves
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "robustness.md"
LONG = "n" * 300  # a file name over the 255-byte limit of common file systems
MARKER = "started.txt"  # written by the Ctrl-C case's data loader once the command is running

# Fast verify/profile settings: the cases fail before (or right after) a tiny measurement.
FAST = ("--device", "x86-host", "--target", "local", "--warmup", "0", "--min-duration", "0", "--iterations", "5")
BUDGET = ("--mac-budget", "0.5", "--method", "uniform")


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    args: tuple[str, ...]  # after `edgecomp`, run in the fixture directory
    expect: str  # a phrase the error line must contain
    code: int = 2
    interrupt: bool = False  # send SIGINT once the command has started (subprocess only)

    def command(self) -> str:
        shown = [f"<{len(a)} x '{a[0]}'>" if a == LONG else a for a in self.args]
        return "edgecomp " + " ".join(shown)


def _cases() -> list[Case]:
    out = "Output path that cannot be written (checked before any work)"
    data = "Data that does not fit the model"
    values = "Option values (checked while the command line is parsed)"
    model = "Models, weights and profiles"
    stop = "Interrupt"
    c = Case
    return [
        c(out, "compress -o under a regular file", ("compress", "zoo:tiny_cnn", *BUDGET, "-o", "afile/out"), "is a file, not a directory"),
        c(out, "compress -o name over 255 bytes", ("compress", "zoo:tiny_cnn", *BUDGET, "-o", LONG), "over the limit"),
        c(out, "compress -o through a symlink loop", ("compress", "zoo:tiny_cnn", *BUDGET, "-o", "loop/out"), "symbolic link loop"),
        c(out, "convert -o under a regular file", ("convert", "zoo:tiny_cnn", "--format", "onnx", "-o", "afile/model.onnx"), "is a file, not a directory"),
        c(out, "convert -o through a symlink loop", ("convert", "zoo:tiny_cnn", "--format", "onnx", "-o", "loop/model.onnx"), "symbolic link loop"),
        c(out, "export -o under a regular file", ("export", "zoo:tiny_cnn", "--device", "x86-host", "-o", "afile/out"), "is a file, not a directory"),
        c(out, "export -o name over 255 bytes", ("export", "zoo:tiny_cnn", "--device", "x86-host", "-o", LONG), "over the limit"),
        c(out, "verify --report under a regular file", ("verify", "tiny.onnx", *FAST, "--report", "afile/r.json"), "is a file, not a directory"),
        c(out, "verify --markdown through a symlink loop", ("verify", "tiny.onnx", *FAST, "--markdown", "loop/s.md"), "symbolic link loop"),
        c(out, "verify --histogram name over 255 bytes", ("verify", "tiny.onnx", *FAST, "--histogram", LONG), "over the limit"),
        c(out, "verify --junit under a regular file", ("verify", "tiny.onnx", *FAST, "--junit", "afile/j.xml"), "is a file, not a directory"),
        c(out, "profile --report under a regular file", ("profile", "tiny.onnx", *FAST, "--report", "afile/r.json"), "is a file, not a directory"),
        c(data, "evaluate: npz of another image shape", ("evaluate", "zoo:tiny_cnn", "--data", "shape.npz"), "cannot run on"),
        c(data, "evaluate: label outside the model's classes", ("evaluate", "zoo:tiny_cnn", "--data", "labels.npz"), "has label 99"),
        c(data, "evaluate: model outputs != the data's classes", ("evaluate", "three.py:build", "--input-shape", "1,1,28,28", "--data", "fashion-mnist:test"), "has 10 classes but"),
        c(data, "compress: label outside the model's classes", ("compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--data", "labels.npz", "-o", "out"), "has label 99"),
        c(data, "verify --data of another image shape", ("verify", "tiny.onnx", *FAST, "--data", "shape.npz"), "has samples of shape"),
        c(data, "verify --data: label outside the model's classes", ("verify", "tiny.onnx", *FAST, "--data", "labels.npz"), "has label 99"),
        c(data, "verify --reference that cannot take the inputs", ("verify", "tiny.onnx", *FAST, "--data", "good.npz", "--reference", "zoo:squeezenet1_1"), "reference model zoo:squeezenet1_1"),
        c(data, "verify --reference with fewer outputs than labels", ("verify", "tiny.onnx", *FAST, "--data", "good.npz", "--reference", "three.py:build"), "has 3 outputs"),
        c(data, "verify --compare with a reference of other outputs", ("verify", "tiny.onnx", *FAST, "--compare", "--reference", "three.py:build"), "cannot be compared"),
        c(values, "compress --seed -1", ("compress", "zoo:tiny_cnn", *BUDGET, "--seed", "-1", "-o", "out"), "--seed"),
        c(values, "verify --seed -1", ("verify", "tiny.onnx", *FAST, "--seed", "-1"), "--seed"),
        c(values, "compress --sample 0", ("compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--data", "good.npz", "--sample", "0", "-o", "out"), "--sample"),
        c(values, "compress --sample -3", ("compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--data", "good.npz", "--sample", "-3", "-o", "out"), "--sample"),
        c(values, "compress --sample 2.5 (a count must be whole)", ("compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--data", "good.npz", "--sample", "2.5", "-o", "out"), "whole"),
        c(values, "compress --finetune-epochs -1", ("compress", "zoo:tiny_cnn", *BUDGET, "--data", "good.npz", "--finetune-epochs", "-1", "-o", "out"), "--finetune-epochs"),
        c(values, "verify --latency-budget-ms nan", ("verify", "tiny.onnx", *FAST, "--latency-budget-ms", "nan"), "not a finite number"),
        c(values, "export --latency-budget-ms 0 (before analyze)", ("export", "zoo:tiny_cnn", "--device", "x86-host", "--latency-budget-ms", "0", "-o", "out"), "--latency-budget-ms"),
        c(values, "export --max-accuracy-drop 2", ("export", "zoo:tiny_cnn", "--device", "x86-host", "--max-accuracy-drop", "2", "-o", "out"), "--max-accuracy-drop"),
        c(values, "compress --mac-budget 1.5 (read as absolute)", ("compress", "zoo:tiny_cnn", "--mac-budget", "1.5", "--method", "uniform", "-o", "out"), "read as 1.5 absolute MACs"),
        c(values, "compress --mac-budget junk", ("compress", "zoo:tiny_cnn", "--mac-budget", "lots", "--method", "uniform", "-o", "out"), "cannot parse MAC budget"),
        c(values, "compress --precision int8 on a device without int8", ("compress", "zoo:tiny_cnn", "--device", "jetson-nano", "--precision", "int8", "--method", "uniform", "-o", "out"), "does not support precision 'int8'"),
        c(model, "NaN in the weights (compress)", ("compress", "zoo:tiny_cnn", "--weights", "nan.pt", *BUDGET, "-o", "out"), "layer 'conv2' weight has 3 NaN"),
        c(model, "NaN in the weights (inspect)", ("inspect", "zoo:tiny_cnn", "--weights", "nan.pt"), "layer 'conv2' weight has 3 NaN"),
        c(model, "weights file of random bytes (.pt)", ("compress", "zoo:tiny_cnn", "--weights", "random.pt", *BUDGET, "-o", "out"), "corrupt or not a PyTorch checkpoint"),
        c(data, "data file of random bytes (.npz)", ("evaluate", "zoo:tiny_cnn", "--data", "random.npz"), "corrupt or not an .npz"),
        c(model, "a model factory that calls sys.exit(0)", ("verify", "tiny.onnx", *FAST, "--data", "good.npz", "--reference", "quits.py:build"), "sys.exit(0)"),
        c(model, "a model with no Conv/Linear layer", ("compress", "nolayers.py:build", "--input-shape", "1,1,4,4", *BUDGET, "-o", "out"), "no decomposable layer"),
        c(model, "a device profile missing 5 fields", ("compress", "zoo:tiny_cnn", "--profile", "broken.yaml", "--method", "uniform", "-o", "out"), "missing required fields"),
        c(stop, "Ctrl-C during compress", ("compress", "zoo:tiny_cnn", "--mac-budget", "0.5", "--data", "started.py:train", "--sample", "1", "--max-iter", "500", "-o", "out"),
          "interrupted: nothing is half-written", code=130, interrupt=True),
    ]


CASES = _cases()


# ---- fixtures -------------------------------------------------------------------------------------
NOLAYERS_PY = textwrap.dedent('''
    from torch import nn

    def build():
        return nn.Sequential(nn.Flatten(), nn.ReLU())
''')
THREE_PY = textwrap.dedent('''
    from edgecomp.models.zoo.tiny_cnn import tiny_cnn

    def build():
        return tiny_cnn(num_classes=3)
''')
STARTED_PY = textwrap.dedent(f'''
    from pathlib import Path

    def train():
        from edgecomp.data import load_dataset

        data = load_dataset("fashion-mnist:train")
        Path(__file__).with_name("{MARKER}").write_text("the command is running")
        return data
''')
BROKEN_YAML = "name: broken\nruntime:\n  kind: onnxruntime\n"
QUITS_PY = "import sys\n\n\ndef build():\n    sys.exit(0)\n"


def make_fixtures(folder: Path) -> Path:
    """Write every file the cases name into `folder` (small: tiny npz files, a 4 KB ONNX model)."""
    import numpy as np
    import torch

    from edgecomp.models.zoo.tiny_cnn import tiny_cnn
    from edgecomp.exporters.onnx_export import export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "afile").write_text("a regular file, not a directory\n")
    os.symlink("loop", folder / "loop")  # a link to itself: any path through it is a loop
    rng = np.random.default_rng(0)
    x = rng.random((20, 1, 28, 28), dtype=np.float32)
    np.savez(folder / "good.npz", x=x, y=np.arange(20) % 10)
    np.savez(folder / "shape.npz", x=rng.random((20, 3, 32, 32), dtype=np.float32), y=np.arange(20) % 10)
    np.savez(folder / "labels.npz", x=x, y=np.full(20, 99))
    state = tiny_cnn().state_dict()
    state["conv2.weight"][0, 0, 0, :3] = float("nan")
    torch.save(state, folder / "nan.pt")
    (folder / "nolayers.py").write_text(NOLAYERS_PY)
    (folder / "three.py").write_text(THREE_PY)
    (folder / "started.py").write_text(STARTED_PY)
    (folder / "broken.yaml").write_text(BROKEN_YAML)
    (folder / "quits.py").write_text(QUITS_PY)
    (folder / "random.pt").write_bytes(rng.bytes(4096))
    (folder / "random.npz").write_bytes(rng.bytes(4096))
    export_onnx(tiny_cnn(), folder / "tiny.onnx", (1, 1, 28, 28))
    return folder


def snapshot(folder: Path) -> set[str]:
    """Every path under `folder` (without following links), to see what a case wrote."""
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(root, name), folder))
    return found


def written(folder: Path, before: set[str]) -> list[str]:
    """What appeared under `folder` since `before` (Python's bytecode caches of the fixtures aside)."""
    return sorted(p for p in snapshot(folder) - before if "__pycache__" not in p and p != MARKER)


# ---- running and judging a case -------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    stderr: str
    wrote: list[str]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def problems(case: Case, outcome: Outcome) -> list[str]:
    """What is wrong with how the CLI handled `case` (empty: it behaved)."""
    found = []
    lines = error_lines(outcome.stderr)
    if outcome.code != case.code:
        found.append(f"exit code {outcome.code}, expected {case.code}")
    if "Traceback" in outcome.stderr:
        found.append("a traceback on stderr")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        found.append(f"stderr is not one `error:` line: {lines[:4]}")
    elif case.expect not in lines[0]:
        found.append(f"the message lacks {case.expect!r}: {lines[0]}")
    if outcome.wrote:
        found.append(f"wrote {sorted(outcome.wrote)}")
    return found


def run_subprocess(case: Case, folder: Path, timeout: float = 600) -> Outcome:
    """Run the case as a user does: `python -m edgecomp ...` in `folder`."""
    before = snapshot(folder)
    marker = folder / MARKER
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # SIGINT's default action in the child, even where this process was started with it ignored
    default_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if case.interrupt else None
    proc = subprocess.Popen([sys.executable, "-m", "edgecomp", *case.args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    if case.interrupt:
        deadline = time.monotonic() + timeout
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the command: loading done, the solver running
        proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        stderr += f"\n(killed after {timeout:g} s)"
    marker.unlink(missing_ok=True)
    return Outcome(proc.returncode, stderr, written(folder, before))


# ---- the document ---------------------------------------------------------------------------------
HEADER = """# Robustness: bad input

Every case below is a mistake a user can make, or a Ctrl-C. Each exits with code 2 ("could not
run"; 130 when interrupted) and prints exactly one line on stderr, `error: ...`, that says what to
do: no traceback, and nothing is written. Output paths are checked before any work starts; option
values while the command line is parsed; data against the model before training or measuring. An
internal error (a bug, not a mistake) also exits 2, but prints its traceback and asks to be reported.

Produced by `python benchmarks/robustness_table.py`, which runs each command in a scratch directory
holding the files it names (`afile` is a regular file, `loop` a symbolic link to itself, `*.npz` tiny
datasets, `random.pt`/`random.npz` random bytes, `nan.pt` weights with 3 NaN values, `broken.yaml` a profile with 5 fields missing,
`three.py:build` a 3-class model, `tiny.onnx` the exported `zoo:tiny_cnn`). tests/test_bad_input.py
runs the same cases and checks that this table lists exactly them.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: list[tuple[Case, Outcome]]) -> str:
    lines = [HEADER]
    group = None
    for case, outcome in results:
        if case.group != group:
            group = case.group
            lines += ["", f"## {group}", "", "| case | command | exit | message |", "|---|---|---|---|"]
        message = (error_lines(outcome.stderr) or ["(nothing)"])[0]
        lines.append(f"| {_cell(case.name)} | `{_cell(case.command())}` | {outcome.code} | {_cell(message)} |")
    return "\n".join(lines) + "\n"


def parse_rows(text: str) -> list[tuple[str, str, int]]:
    """(case, command, exit code) of every table row in the document."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| case |"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows.append((cells[0].replace("\\|", "|"), cells[1].strip("`").replace("\\|", "|"), int(cells[2])))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a case misbehaves")
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args()
    from edgecomp.io import write_text

    results, bad = [], 0
    with tempfile.TemporaryDirectory(prefix="edgecomp-robustness-") as scratch:
        folder = make_fixtures(Path(scratch) / "work")
        for case in CASES:
            outcome = run_subprocess(case, folder)
            wrong = problems(case, outcome)
            bad += bool(wrong)
            print(f"{'FAIL' if wrong else 'ok  '} {case.name}: exit {outcome.code}" + "".join(f"\n     {w}" for w in wrong),
                  file=sys.stderr)
            results.append((case, outcome))
    write_text(args.out, render(results))
    print(f"wrote {args.out} ({len(CASES)} cases, {bad} misbehaving)", file=sys.stderr)
    return 1 if (bad and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
