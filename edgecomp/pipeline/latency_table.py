"""Per-layer latency table measured on the target (`edgecomp export --cost latency`, and the never-slower rule).

Every decomposable layer is exported alone (its original form and its factored form at a few ranks below
break-even) and timed on the target with the same harness as the whole model; the factored latencies are
fit as a line in the rank (edgecomp.ranks.latency.fit_line). The rest of the network (everything not
decomposed, and per-call overheads) is the measured whole-model latency minus the sum of the original
layers' latencies.

Per-layer timings go through the per-user cache (edgecomp.latency): the whole model is always timed first,
and what the runtime reports for it (runtime and version, providers, threads, the machine that ran it)
keys every layer's entry, so a later run on the same machine and runtime reuses them; a layer is exported
only when its entry is missing. use_cache=False (--no-cache) measures every layer afresh and refreshes
the entries.

The caller (edgecomp.pipeline.rounds) passes the loaded source model and the stand-in's execution
providers in, so this module needs nothing from it (no import cycle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

RANKS_PER_LAYER = 4
TIMING = {"warmup_s": 0.05, "iterations": 60, "min_duration_s": 0.1}  # per layer: p50 of >= 60 runs


@dataclass(frozen=True)
class Timed:
    """One timing: its p50 in ms, and what the runtime reported about the run (`run_facts`)."""

    ms: float
    facts: dict


Timer = Callable[[Path], Timed]


def latency_budget_ms(req) -> float | None:
    return req.latency_budget_ms if req.latency_budget_ms is not None else req.profile.latency_budget_ms


def rank_grid(break_even: int, max_rank: int, n: int = RANKS_PER_LAYER) -> list[int]:
    top = max(1, min(break_even - 1, max_rank))
    return sorted({int(round(v)) for v in np.linspace(1, top, n)})


def run_facts(report) -> dict[str, Any]:
    """What keys a measurement, from a runtime ProfileReport: runtime, version, providers, threads, ..."""
    rt = report.runtime
    return {"runtime": rt.get("name"), "runtime_version": rt.get("version"),
            "providers": list(rt.get("providers_used") or []),
            "graph_optimization_level": rt.get("graph_optimization_level"), "precision": rt.get("precision"),
            "threads": rt.get("threads"), "batch": report.settings.get("batch_size"),
            "environment": report.target.get("environment") or {}}


def harness_timer(req, providers: list[str] | None) -> Timer:
    """Time an ONNX file on the request's target with the runtime harness (p50 of TIMING's runs)."""
    from edgecomp import runtime
    from edgecomp.runtime import MeasureSettings

    settings = MeasureSettings(**TIMING)

    def time_onnx(onnx_path: Path) -> Timed:
        report = runtime.profile_artifact(onnx_path, req.profile, target=req.target, settings=settings,
                                          providers=providers)
        return Timed(float(report.latency.p50), run_facts(report))

    return time_onnx


def measurement_context(target_url: str, facts: dict):
    """The edgecomp.latency MeasurementContext of a run on `target_url` whose runtime reported `facts`."""
    from edgecomp.latency import MeasurementContext, measured_where

    return MeasurementContext(
        where=measured_where(target_url, facts.get("environment")), runtime=str(facts.get("runtime")),
        runtime_version=str(facts.get("runtime_version")), providers=tuple(facts.get("providers") or ()),
        graph_optimization_level=facts.get("graph_optimization_level"), precision=str(facts.get("precision")),
        threads=facts.get("threads"), batch=int(facts.get("batch") or 1))


def measure_latency_table(req, analysis: dict, folder: Path, log, *, loaded, providers: list[str] | None,
                          use_cache: bool = True, timer: Timer | None = None, cache=None) -> dict:
    """Time `loaded` (an edgecomp.models.LoadedModel, the source model) and each of its decomposable
    layers, original and factored, on the target with `providers` (None: the profile's); latencies in ms.

    timer: times one ONNX file (default: harness_timer). cache: an edgecomp.latency.LatencyCache (default:
    the per-user one). use_cache=False: measure every layer afresh and overwrite its entry.
    """
    import torch

    from edgecomp.exporters import export_onnx
    from edgecomp.factor.modules import make_factored
    from edgecomp.graph.cost import analyze_model, layer_scheme
    from edgecomp.latency import LatencyCache, entry_key, layer_shape
    from edgecomp.latency.keys import DENSE
    from edgecomp.ranks.latency import fit_line, latency_break_even_rank

    timer = timer or harness_timer(req, providers)
    cache = cache if cache is not None else LatencyCache()
    input_shape = tuple(analysis["input_shape"])
    cost = analyze_model(loaded.module, input_shape, req.scheme)
    modules = dict(loaded.module.named_modules())
    whole = timer(export_onnx(loaded.module, folder / "model.onnx", input_shape).path)
    context = measurement_context(req.target_url(), whole.facts)
    layers = {}
    for lc in cost.decomposable:
        info, dec = lc.layer, lc.decomposition
        shape, scheme = (1, *info.in_shape), layer_scheme(info, req.scheme)
        key_shape = layer_shape(info)

        def time_module(make, stem: str, shape=shape) -> float:
            return timer(export_onnx(make(), folder / f"{stem}.onnx", shape, dynamic_batch=False).path).ms

        def factored(r: int, info=info, scheme=scheme):
            torch.manual_seed(0)
            return make_factored(info, scheme, r).eval()

        original_ms = cache.measure(entry_key(context, key_shape, DENSE, DENSE),
                                    lambda name=lc.name: time_module(lambda: modules[name], f"{name}.orig"),
                                    use_cache=use_cache)
        ranks = rank_grid(dec.break_even_rank, dec.max_rank)
        times = [cache.measure(entry_key(context, key_shape, scheme, r),
                               lambda r=r, name=lc.name: time_module(lambda: factored(r), f"{name}.r{r}"),
                               use_cache=use_cache) for r in ranks]
        intercept, slope = fit_line(ranks, times)
        row = {"original_ms": original_ms, "ranks": ranks, "latency_ms": times, "intercept_ms": intercept,
               "slope_ms": slope, "scheme": scheme, "max_rank": dec.max_rank}
        row["latency_break_even_rank"] = latency_break_even_rank(row, dec.max_rank)
        layers[lc.name] = row
        be = row["latency_break_even_rank"]
        log(f"[latency-table] {lc.name}: original {original_ms:.4f} ms, factored {intercept:.4f} + {slope:.5f} x rank "
            "ms: " + (f"measurably faster below rank {be}" if be > 1 else "never measurably faster"))
    stats = asdict(cache.stats)
    log(f"[latency-table] cache {cache.folder}: {stats['hits']} reused, {stats['misses']} measured"
        + ("" if use_cache else " (--no-cache: every layer measured afresh)"))
    fixed = max(0.0, whole.ms - sum(row["original_ms"] for row in layers.values()))
    return {"total_ms": whole.ms, "fixed_ms": fixed, "layers": layers, "providers": providers,
            "context": context.to_dict(), "cache": {"path": str(cache.folder), "used": use_cache, **stats},
            "note": "p50 per layer in isolation; fixed = whole model - sum of original layers (clipped at 0)"}
