"""Aligned against unaligned ranks on this CPU: the reference CNN with layers factored at ranks that are multiples
of the host's SIMD width (edgecomp.latency.keys.host_simd_lanes) and at ranks a little above them, timed as whole
models against the original in one interleaved ONNX Runtime run (common.interleaved_latency: spinning off, order
rotated each round), at 1 and 2 threads.

    python benchmarks/bench_rank_alignment.py [--threads 1,2] [--rounds 7] [--iterations 300]

Writes benchmarks/results/rank_alignment.json: per thread count, each variant's ranks, MAC ratio and latency ratio
to the original (median over rounds, min..max round).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import interleaved_latency, reference_model, write_results  # noqa: E402
from edgecomp.exporters import export_onnx  # noqa: E402
from edgecomp.factor.build import set_module  # noqa: E402
from edgecomp.factor.modules import make_factored  # noqa: E402
from edgecomp.graph.cost import analyze_model, layer_scheme  # noqa: E402
from edgecomp.latency.keys import host_simd_lanes  # noqa: E402

SHAPE = (1, 1, 28, 28)
LAYERS = ("features.1.0", "features.3.0", "features.5.0")
MULTIPLES = (1, 3, 5)  # x the SIMD width: aligned ranks per layer (offset ranks add 2 or 3)


def variants(lanes: int) -> dict[str, dict[str, int]]:
    aligned = {name: lanes * k for name, k in zip(LAYERS, MULTIPLES)}
    offset = {name: r + (2 if i % 2 == 0 else 3) for i, (name, r) in enumerate(aligned.items())}
    out = {"original": {}, "all aligned": aligned, "all offset": offset}
    for name in LAYERS:
        out[f"{name} aligned"] = {name: aligned[name]}
        out[f"{name} offset"] = {name: offset[name]}
    return out


def build(model, layers: dict, ranks: dict[str, int]):
    out = copy.deepcopy(model)
    for name, rank in ranks.items():
        torch.manual_seed(0)
        info = layers[name]
        set_module(out, name, make_factored(info, layer_scheme(info, "spatial"), rank).eval())
    return out.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    lanes, isa = host_simd_lanes()
    if lanes < 2:
        sys.exit(f"this host has no SIMD width to align to ({isa})")
    model = reference_model().module.eval()
    cost = analyze_model(model, SHAPE, "spatial")
    layers = {lc.name: lc.layer for lc in cost.decomposable}
    cases = variants(lanes)
    results = {"simd_lanes": lanes, "isa": isa, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths, macs = {}, {}
        for name, ranks in cases.items():
            built = build(model, layers, ranks)
            paths[name] = export_onnx(built, Path(tmp) / f"{len(paths)}.onnx", SHAPE).path
            macs[name] = analyze_model(built, SHAPE, "spatial").total_macs / cost.total_macs
        for threads in (int(t) for t in args.threads.split(",")):
            load, t0 = os.getloadavg(), time.perf_counter()
            timing = interleaved_latency(paths, SHAPE, threads=threads, rounds=args.rounds, iterations=args.iterations)
            rows = [{"variant": name, "ranks": cases[name], "mac_ratio": macs[name], "ratio": t["ratio"],
                     "ratio_min": min(t["round_ratios"]), "ratio_max": max(t["round_ratios"]),
                     "median_ms": 1e3 * t["median_s"]} for name, t in timing.items()]
            results["runs"].append({"threads": threads, "rows": rows, "load_start": load, "load_end": os.getloadavg(),
                                    "seconds": time.perf_counter() - t0})
            print(f"\n{threads} thread(s), {isa} ({lanes} fp32 lanes):")
            for row in rows:
                print(f"  {row['variant']:22s} ranks {row['ranks']}  MACs {row['mac_ratio']:.3f}  latency "
                      f"{row['ratio']:.3f} ({row['ratio_min']:.3f}..{row['ratio_max']:.3f})")
    write_results("rank_alignment", results)


if __name__ == "__main__":
    main()
