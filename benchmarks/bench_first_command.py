"""Wall time and outcome of the README's first command, run as a newcomer runs it.

    python benchmarks/bench_first_command.py [--repeats 1]

Runs the `edgecomp ...` step of README.md's first shell block (parsed from README.md, as the
acceptance test does) in a fresh temporary directory through the installed console script, and
records the wall time, exit code, verdict, per-stage seconds, the compression and the accuracies
from its report.json. Writes benchmarks/results/first_command.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests" / "acceptance")]
from common import write_results  # noqa: E402
from journey import edgecomp, readme_first_command  # noqa: E402


def run_once() -> dict:
    with tempfile.TemporaryDirectory(prefix="edgecomp-first-") as d:
        load_before = os.getloadavg()
        start = time.perf_counter()
        runs = [edgecomp(*argv[1:], cwd=Path(d)) for argv in readme_first_command()]
        wall = time.perf_counter() - start
        report = json.loads((Path(d) / "edgecomp-out" / "report.json").read_text())
        comp = report["final"]["compress"]
        compress_report = json.loads((Path(d) / comp["outdir"] / "report.json").read_text())
        return {
            "wall_s": wall,
            "exit_code": runs[-1].returncode,
            "verdict": report["verdict"],
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "stages_s": {s["stage"]: s["seconds"] for s in report["stages"]},
            "compress_timings_s": compress_report["timings"],
            "mac_ratio": comp["mac_ratio"],
            "param_ratio": comp["param_ratio"],
            "original_accuracy": comp["original_accuracy"],
            "accuracy_before_finetune": comp["accuracy_before_finetune"],
            "accuracy_after_finetune": comp["accuracy"],
            "latency_p90_ms": report["final"]["verify"]["latency"]["p90"],
            "gates": [(g["name"], g["status"]) for g in report["final"]["verify"]["gates"]],
            "settings_note": report.get("settings_note"),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    commands = [" ".join(argv) for argv in readme_first_command()]
    runs = []
    for i in range(args.repeats):
        runs.append(run_once())
        r = runs[-1]
        print(f"run {i + 1}: {r['wall_s']:.1f} s, exit {r['exit_code']} ({r['verdict']}), MACs x{r['mac_ratio']:.3f}, "
              f"top-1 {r['original_accuracy']:.4f} -> {r['accuracy_before_finetune']:.4f} -> "
              f"{r['accuracy_after_finetune']:.4f}", file=sys.stderr)
    write_results("first_command", {"commands": commands, "cpu_count": os.cpu_count(), "runs": runs})


if __name__ == "__main__":
    main()
