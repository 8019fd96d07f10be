"""The measurement harness's own cost: per inference, against a bare ONNX Runtime loop.

    python benchmarks/bench_harness_overhead.py [--model tiny_cnn] [--iterations 3000] [--rounds 7]

Same process, same session options (CPU EP, 1 intra-op thread), same input, alternating rounds:
  bare     for _ in range(N): session.run(None, {name: x})                  -> wall / N
  harness  agent.timed_loop(runner.run, ...) (perf_counter_ns pair per call, batch cycling,
           append)                                                           -> wall / N
overhead per inference = harness - bare (median over rounds), ratio = harness / bare; the loop's
intrinsic cost is isolated with a no-op "inference" (it is far below run-to-run noise on a real
model). Also the
harness's *reported* mean (the sum of the timed calls) against bare, and the fixed cost of one
whole `profile_artifact` call on the local target (agent subprocess start, imports, staging,
statistics) beyond its timed loop.

Writes benchmarks/results/harness_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # benchmarks/common.py, and the repo's packages
from common import write_results  # noqa: E402

from edgecomp import runtime  # noqa: E402
from edgecomp.models import load_model  # noqa: E402
from edgecomp.profiles import load_profile  # noqa: E402
from edgecomp.runtime import agent  # noqa: E402


def export(model_name: str, path: Path) -> tuple[int, ...]:
    from edgecomp.exporters import export_onnx

    loaded = load_model(f"zoo:{model_name}")
    shape = tuple(loaded.input_shape)
    export_onnx(loaded.module, path, shape)
    return shape


def bare_loop(session, name, x, n) -> float:
    run = session.run
    feed = {name: x}
    t0 = time.perf_counter_ns()
    for _ in range(n):
        run(None, feed)
    return (time.perf_counter_ns() - t0) / n / 1e6


def harness_loop(runner, batches, n) -> tuple[float, float]:
    t0 = time.perf_counter_ns()
    out = agent.timed_loop(runner.run, batches, warmup_s=0.0, iterations=n, min_duration_s=0.0)
    wall = (time.perf_counter_ns() - t0) / n / 1e6
    return wall, float(np.mean(out["times_ns"])) / 1e6


def noop_overhead_ns(n: int) -> float:
    """Per-iteration cost of the timing loop itself, isolated with a no-op "inference"."""
    noop = lambda x: None  # noqa: E731
    batches = [0, 1, 2]
    t0 = time.perf_counter_ns()
    for i in range(n):
        noop(batches[i % 3])
    bare = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    agent.timed_loop(noop, batches, warmup_s=0.0, iterations=n, min_duration_s=0.0)
    return (time.perf_counter_ns() - t0 - bare) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_cnn", help="zoo model to export (default tiny_cnn)")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        shape = export(args.model, path)
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        runner = agent.OrtRunner(path, ["CPUExecutionProvider"], threads=1)
        pool = np.random.default_rng(0).random((16, *shape[1:]), dtype=np.float32)
        batches = agent.make_batches(pool, shape[0])
        for _ in range(200):  # warm both
            session.run(None, {name: x})
            runner.run(batches[0])

        bare, wall, reported = [], [], []
        for _ in range(args.rounds):
            bare.append(bare_loop(session, name, batches[0], args.iterations))
            w, r = harness_loop(runner, batches, args.iterations)
            wall.append(w)
            reported.append(r)
        bare_ms, wall_ms, reported_ms = map(statistics.median, (bare, wall, reported))
        noop_ns = statistics.median(noop_overhead_ns(200_000) for _ in range(args.rounds))
        per_round = [w - b for w, b in zip(wall, bare)]

        # fixed cost of a whole profile call (local target): total wall minus its timed loop
        profile = load_profile("x86-host")
        settings = runtime.MeasureSettings(warmup_s=0.0, iterations=args.iterations, min_duration_s=0.0,
                                           cv_threshold=1e6)
        runtime.profile_artifact(path, profile, target="local", settings=settings)  # imports, page cache
        t0 = time.perf_counter()
        rep = runtime.profile_artifact(path, profile, target="local", settings=settings)
        total_s = time.perf_counter() - t0
        fixed_s = total_s - rep.timing["loop_s"] - rep.timing["warmup_s"]

    results = {
        "model": args.model,
        "input_shape": list(shape),
        "onnxruntime": ort.__version__,
        "iterations_per_round": args.iterations,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "bare_session_run_ms": bare_ms,
        "harness_wall_per_inference_ms": wall_ms,
        "harness_reported_mean_ms": reported_ms,
        "overhead_per_inference_us": (wall_ms - bare_ms) * 1e3,
        "overhead_per_inference_us_rounds": [v * 1e3 for v in per_round],
        "ratio_harness_over_bare": wall_ms / bare_ms,
        "timing_loop_overhead_noop_ns": noop_ns,
        "ratio_reported_over_bare": reported_ms / bare_ms,
        "profile_call_total_s": total_s,
        "profile_call_fixed_overhead_s": fixed_s,
        "notes": "medians over alternating rounds in one process; 1 intra-op thread; the harness's fixed cost "
                 "covers the agent subprocess (Python + numpy + onnxruntime import), session creation and "
                 "statistics",
    }
    write_results("harness_overhead", results)
    print(f"bare session.run        {bare_ms * 1e3:9.2f} us/inference")
    print(f"harness loop (wall)     {wall_ms * 1e3:9.2f} us/inference  ratio {wall_ms / bare_ms:.3f}")
    print(f"harness reported mean   {reported_ms * 1e3:9.2f} us/inference  ratio {reported_ms / bare_ms:.3f}")
    print(f"overhead                {(wall_ms - bare_ms) * 1e3:9.2f} us/inference")
    print(f"timing loop alone       {noop_ns:9.1f} ns/iteration (no-op inference)")
    print(f"profile_artifact fixed  {fixed_s:9.3f} s per call (total {total_s:.3f} s)")


if __name__ == "__main__":
    main()
