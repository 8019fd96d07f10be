"""ONNX Runtime CPU latency of each decomposition scheme at equal MACs on zoo:resnet18 layer shapes (issue 16).

Latency depends only on the layer shapes and ranks, not on the weights, so no fit runs: every conv layer that
the scheme factors (3x3 and 7x7 kernels; 1x1 convs and the Linear layer keep their SVD scheme and are left dense
here) gets the rank at which its factored form costs eta x its dense MACs (the largest such rank; for tucker2
the largest tied pair r1 = a c, r2 = a f), built as the module the scheme exports (edgecomp.factor.modules
.make_factored) with random weights. Every model then has the same MACs up to rounding; the whole-model MAC
ratios are printed. Timed like benchmarks/bench_schemes.py: one process, ONNX Runtime with --threads intra-op
threads and spinning off, batch 1, --rounds rounds that alternate the sessions (order rotated each round); per
model the median of its per-round medians, reported as a ratio to the original's measured in the same rounds.

    python benchmarks/bench_scheme_latency.py [--etas 0.5,0.3] [--threads 1] [--rounds 5]

Writes benchmarks/results/scheme_latency.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from common import interleaved_latency, write_results

from edgecomp.exporters import export_onnx
from edgecomp.factor.build import set_module
from edgecomp.factor.modules import make_factored
from edgecomp.graph import analyze_model
from edgecomp.graph.cost import tucker2_layer_costs
from edgecomp.models import get_zoo_model

SCHEMES = ("spatial", "channel", "cp", "tucker2")


def tucker2_pair(layer, budget: float) -> tuple[int, int]:
    """The largest tied pair (ceil-free: r1 = round(a c), r2 = round(a f), both >= 1) with MACs <= budget."""
    c, f = layer.in_channels, layer.out_channels
    best = (1, 1)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        a = (lo + hi) / 2
        pair = (max(1, round(a * c)), max(1, round(a * f)))
        if tucker2_layer_costs(layer, *pair)[0] <= budget:
            best, lo = pair, a
        else:
            hi = a
    return best


def scheme_model(model: torch.nn.Module, shape, scheme: str, eta: float, seed: int) -> tuple[torch.nn.Module, dict]:
    """`model` with each conv the scheme factors replaced by its rank-at-eta skeleton (random weights)."""
    import copy

    out = copy.deepcopy(model)
    ranks = {}
    generator = torch.Generator().manual_seed(seed)
    for lc in analyze_model(model, shape, scheme).decomposable:
        dec, layer = lc.decomposition, lc.layer
        if dec.scheme != scheme:  # 1x1 convs and the Linear layer: left dense
            continue
        budget = eta * layer.macs
        if scheme == "tucker2":
            rank = tucker2_pair(layer, budget)
        else:
            rank = max(1, min(dec.max_rank, int(budget // dec.macs_per_rank)))
        module = make_factored(layer, scheme, rank)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        set_module(out, lc.name, module)
        ranks[lc.name] = list(rank) if isinstance(rank, tuple) else int(rank)
    return out.eval(), ranks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:resnet18")
    parser.add_argument("--input-shape", default="1,3,224,224")
    parser.add_argument("--etas", default="0.5,0.3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per model per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="scheme_latency")
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.input_shape.split(","))
    torch.manual_seed(args.seed)
    model = get_zoo_model(args.model.removeprefix("zoo:")).eval()
    original_macs = analyze_model(model, shape).total_macs
    load_at_start = os.getloadavg()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_scheme_latency_"))
    paths = {"original": export_onnx(model, tmp / "original.onnx", shape).path}
    rows = []
    for eta in (float(e) for e in args.etas.split(",") if e):
        for scheme in SCHEMES:
            built, ranks = scheme_model(model, shape, scheme, eta, args.seed)
            key = f"{scheme}@{eta}"
            paths[key] = export_onnx(built, tmp / f"{scheme}_{eta}.onnx", shape).path
            macs = analyze_model(built, shape).total_macs
            rows.append({"scheme": scheme, "eta": eta, "key": key, "mac_ratio": macs / original_macs,
                         "ranks": ranks})
    latency = interleaved_latency(paths, shape, threads=args.threads, rounds=args.rounds,
                                  iterations=args.iterations, warmup=args.warmup)
    print(f"{args.model} at {args.input_shape}: ONNX Runtime CPU, {args.threads} thread(s), spinning off, batch 1, "
          f"{args.rounds} interleaved rounds; original {latency['original']['median_s'] * 1e3:.1f} ms")
    print("| scheme | eta | MAC ratio | latency ratio | min..max round ratio | latency / MAC ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        lat = latency[row["key"]]
        row["latency_ratio"] = lat["ratio"]
        rr = lat["round_ratios"]
        print(f"| {row['scheme']} | {row['eta']} | {row['mac_ratio']:.3f} | {lat['ratio']:.3f} | "
              f"{min(rr):.3f}..{max(rr):.3f} | {lat['ratio'] / row['mac_ratio']:.2f} |")
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s, load average {os.getloadavg()}")
    import onnxruntime

    write_results(args.out, {
        "model": args.model, "input_shape": list(shape), "threads": args.threads, "rounds": args.rounds,
        "iterations": args.iterations, "warmup": args.warmup, "onnxruntime": onnxruntime.__version__,
        "load_average_start": load_at_start, "load_average": os.getloadavg(), "total_seconds": total,
        "note": "weights random (latency depends on shapes and ranks only); each factored conv at eta x its dense "
                "MACs; 1x1 convs and the Linear layer dense; latency_ratio = median of per-round medians / the "
                "original's in the same rounds",
        "rows": rows, "latency": latency,
    })


if __name__ == "__main__":
    main()
