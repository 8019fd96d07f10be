"""Per-layer latency table measured on the target (`edgecomp export --cost latency`).

Every decomposable layer is exported alone (its original form and its factored form at a few
ranks below break-even) and timed on the target with the same harness as the whole model; the
factored latencies are fit as a line in the rank (edgecomp.ranks.latency.fit_line). The rest of
the network (everything not decomposed, and per-call overheads) is the measured whole-model latency
minus the sum of the original layers' latencies.

The caller (edgecomp.pipeline.rounds) passes the loaded source model and the stand-in's execution
providers in, so this module needs nothing from it (no import cycle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RANKS_PER_LAYER = 4


def latency_budget_ms(req) -> float | None:
    return req.latency_budget_ms if req.latency_budget_ms is not None else req.profile.latency_budget_ms


def rank_grid(break_even: int, max_rank: int, n: int = RANKS_PER_LAYER) -> list[int]:
    top = max(1, min(break_even - 1, max_rank))
    return sorted({int(round(v)) for v in np.linspace(1, top, n)})


def _time_ms(req, onnx_path: Path, providers) -> float:
    from edgecomp import runtime
    from edgecomp.runtime import MeasureSettings

    settings = MeasureSettings(warmup_s=0.05, iterations=60, min_duration_s=0.1)
    report = runtime.profile_artifact(onnx_path, req.profile, target=req.target, settings=settings, providers=providers)
    return float(report.latency.p50)


def measure_latency_table(req, analysis: dict, folder: Path, log, *, loaded, providers: list[str] | None) -> dict:
    """Time `loaded` (an edgecomp.models.LoadedModel, the source model) and each of its decomposable
    layers, original and factored, on the target with `providers` (None: the profile's); latencies in ms."""
    import torch

    from edgecomp.factor.modules import make_factored
    from edgecomp.graph.cost import analyze_model, layer_scheme
    from edgecomp.exporters import export_onnx

    input_shape = tuple(analysis["input_shape"])
    cost = analyze_model(loaded.module, input_shape, req.scheme)
    modules = dict(loaded.module.named_modules())
    whole = export_onnx(loaded.module, folder / "model.onnx", input_shape)
    total_ms = _time_ms(req, whole.path, providers)
    layers = {}
    for lc in cost.decomposable:
        info, dec = lc.layer, lc.decomposition
        shape = (1, *info.in_shape)
        original_path = export_onnx(modules[lc.name], folder / f"{lc.name}.orig.onnx", shape, dynamic_batch=False).path
        original_ms = _time_ms(req, original_path, providers)
        ranks, times = rank_grid(dec.break_even_rank, dec.max_rank), []
        for r in ranks:
            torch.manual_seed(0)
            module = make_factored(info, layer_scheme(info, req.scheme), r).eval()
            path = export_onnx(module, folder / f"{lc.name}.r{r}.onnx", shape, dynamic_batch=False).path
            times.append(_time_ms(req, path, providers))
        from edgecomp.ranks.latency import fit_line

        intercept, slope = fit_line(ranks, times)
        layers[lc.name] = {"original_ms": original_ms, "ranks": ranks, "latency_ms": times,
                           "intercept_ms": intercept, "slope_ms": slope}
        log(f"[latency-table] {lc.name}: original {original_ms:.4f} ms, factored {intercept:.4f} + {slope:.5f} x rank ms")
    fixed = max(0.0, total_ms - sum(row["original_ms"] for row in layers.values()))
    return {"total_ms": total_ms, "fixed_ms": fixed, "layers": layers, "providers": providers,
            "note": "p50 per layer in isolation; fixed = whole model - sum of original layers (clipped at 0)"}
