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

import statistics
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


def rank_grid(break_even: int, max_rank: int, n: int = RANKS_PER_LAYER, multiple: int = 1) -> list[int]:
    """`n` ranks from 1 to below the break-even rank, each rounded down to `multiple` as the built ranks
    will be (edgecomp.factor.rank_rounding.round_rank), so the fit describes the ranks that are built."""
    from edgecomp.factor.rank_rounding import round_rank

    top = max(1, min(break_even - 1, max_rank))
    return sorted({round_rank(int(round(v)), multiple) for v in np.linspace(1, top, n)})


def table_rank_multiple(req) -> int:
    """The rank multiple the compress stage will round to (--rank-multiple, else the profile's); 1 for a
    request without a profile (a benchmark's own table request)."""
    from edgecomp.factor.rank_rounding import resolve_rank_multiple

    profile = getattr(req, "profile", None)
    return resolve_rank_multiple(getattr(req, "rank_multiple", None), profile, getattr(req, "precision", None))[0]


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
                          use_cache: bool = True, timer: Timer | None = None, cache=None,
                          layer_timing: str = "isolated") -> dict:
    """Time `loaded` (an edgecomp.models.LoadedModel, the source model) and each of its decomposable
    layers, original and factored, on the target with `providers` (None: the profile's); latencies in ms.

    timer: times one ONNX file (default: harness_timer). cache: an edgecomp.latency.LatencyCache (default:
    the per-user one). use_cache=False: measure every layer afresh and overwrite its entry.
    layer_timing: "isolated" (each layer exported and timed alone), "in-context" (each factored candidate
    timed inside the whole model, edgecomp.pipeline.layer_timing), or "auto" (in-context when that is cheap).
    """
    import torch

    from edgecomp.exporters import export_onnx
    from edgecomp.factor.modules import make_factored
    from edgecomp.graph.cost import analyze_model, layer_scheme
    from edgecomp.latency import LatencyCache, entry_key, layer_shape
    from edgecomp.latency.keys import DENSE
    from edgecomp.pipeline import layer_timing as ctx
    from edgecomp.ranks.latency import fit_line, latency_break_even_rank

    timer = timer or harness_timer(req, providers)
    cache = cache if cache is not None else LatencyCache()
    input_shape = tuple(analysis["input_shape"])
    cost = analyze_model(loaded.module, input_shape, req.scheme)
    modules = dict(loaded.module.named_modules())
    model_onnx, export_s = ctx.elapsed(lambda: export_onnx(loaded.module, folder / "model.onnx", input_shape).path)
    whole, call_s = ctx.elapsed(lambda: timer(model_onnx))
    context = measurement_context(req.target_url(), whole.facts)
    digest = ctx.architecture_digest(model_onnx)

    def time_module(make, stem: str, shape) -> float:
        return timer(export_onnx(make(), folder / f"{stem}.onnx", shape, dynamic_batch=False).path).ms

    def export_whole(module, stem: str) -> Path:
        return export_onnx(module, folder / f"{stem}.onnx", input_shape).path

    multiple = table_rank_multiple(req)
    plans = []
    for lc in cost.decomposable:
        info, dec = lc.layer, lc.decomposition
        scheme = layer_scheme(info, req.scheme)
        ranks = rank_grid(dec.break_even_rank, dec.max_rank, multiple=multiple)
        in_shape = ctx.in_context_shape(layer_shape(info), digest, lc.name, ranks)
        ctx_keys = ([entry_key(context, in_shape, DENSE, DENSE)] + [entry_key(context, in_shape, scheme, r) for r in ranks]
                    + [entry_key(context, in_shape, f"{scheme}:noise-margin", 0)])
        plans.append((lc, scheme, ranks, ctx_keys))
    stored = {lc.name: cache.get_all(keys) for lc, _, _, keys in plans} if use_cache and layer_timing != "isolated" else {}
    uncached = [] if layer_timing == "isolated" else [p for p in plans if stored.get(p[0].name) is None]
    calls = sum(ctx.ROUNDS * (len(p[2]) + 1) for p in uncached)
    exports = sum(len(p[2]) for p in uncached)
    choice = ctx.choose_layer_timing(layer_timing, call_s + export_s * exports / max(calls, 1), calls)
    if layer_timing != "isolated":
        log(f"[latency-table] layer timing: {choice['mode']} ({choice['why']})")
    dense_alone = {lc.name: cache.measure(entry_key(context, layer_shape(lc.layer), DENSE, DENSE),
                                          lambda name=lc.name, shape=(1, *lc.layer.in_shape): time_module(
                                              lambda: modules[name], f"{name}.orig", shape), use_cache=use_cache)
                   for lc, *_ in plans}
    factored_by_layer = {}
    for lc, scheme, ranks, ctx_keys in plans:
        def factored(r: int, info=lc.layer, scheme=scheme):
            torch.manual_seed(0)
            return make_factored(info, scheme, r).eval()
        factored_by_layer[lc.name] = factored

    grouped = {}  # in context: each layer's (O, [V(r)], noise margin), from the cache or timed now
    if choice["mode"] == "in-context":
        for lc, scheme, ranks, ctx_keys in plans:
            def timed_group(name=lc.name, ranks=ranks) -> list[float]:
                o, variant_ms, margin = ctx.time_layer_in_context(loaded.module, model_onnx, name, ranks,
                                                                  factored_by_layer[name], export_whole, timer)
                return [o, *variant_ms, max(margin, ctx.MIN_MARGIN_MS)]  # a cache entry is > 0 ms

            values = cache.measure_group(ctx_keys, timed_group, use_cache=use_cache, stored=stored.get(lc.name))
            grouped[lc.name] = (values[0], values[1:-1], values[-1])
    # In context the model is O + sum_i (V_i(r_i) - O), O the median over the layer groups (steadier than the
    # first whole-model call): the dense layers, timed alone with a session's own overheads, are scaled to sum
    # to no more than O, so the table predicts O for the original.
    reference_ms = statistics.median(g[0] for g in grouped.values()) if grouped else whole.ms
    scale = 1.0
    if grouped and sum(dense_alone.values()) > reference_ms:
        scale = reference_ms / sum(dense_alone.values())
    layers = {}
    for lc, scheme, ranks, ctx_keys in plans:
        info, dec = lc.layer, lc.decomposition
        shape, key_shape = (1, *info.in_shape), layer_shape(info)
        original_ms = scale * dense_alone[lc.name]
        row = {}
        if lc.name in grouped:
            o, variant_ms, margin = grouped[lc.name]
            times = [original_ms + (v - o) for v in variant_ms]
            row["in_context"] = {"model_ms": o, "variant_ms": variant_ms, "dense_alone_ms": dense_alone[lc.name]}
            row["margin_ms"] = margin
        else:
            times = [cache.measure(entry_key(context, key_shape, scheme, r),
                                   lambda r=r, name=lc.name, shape=shape: time_module(
                                       lambda: factored_by_layer[name](r), f"{name}.r{r}", shape),
                                   use_cache=use_cache) for r in ranks]
        intercept, slope = fit_line(ranks, times)
        row = {"original_ms": original_ms, "ranks": ranks, "latency_ms": times, "intercept_ms": intercept,
               "slope_ms": slope, "scheme": scheme, "max_rank": dec.max_rank, **row}
        row["latency_break_even_rank"] = latency_break_even_rank(row, dec.max_rank)
        layers[lc.name] = row
        be = row["latency_break_even_rank"]
        log(f"[latency-table] {lc.name}: original {original_ms:.4f} ms, factored {intercept:.4f} + {slope:.5f} x rank "
            "ms: " + (f"measurably faster below rank {be}" if be > 1 else "never measurably faster"))
    stats = asdict(cache.stats)
    log(f"[latency-table] cache {cache.folder}: {stats['hits']} reused, {stats['misses']} measured"
        + ("" if use_cache else " (--no-cache: every layer measured afresh)"))
    fixed = max(0.0, reference_ms - sum(row["original_ms"] for row in layers.values()))
    how = (f"factored layers timed inside the whole model: dense alone x {scale:.3g} + the whole model's difference "
           "(edgecomp.pipeline.layer_timing)" if choice["mode"] == "in-context" else "p50 per layer in isolation")
    return {"total_ms": whole.ms, "fixed_ms": fixed, "layers": layers, "providers": providers,
            "context": context.to_dict(), "cache": {"path": str(cache.folder), "used": use_cache, **stats},
            "layer_timing": choice,
            "reference_ms": reference_ms,
            "note": f"{how}; fixed = reference_ms (the whole model: in context, the median of its group timings) "
                    "- sum of original layers (clipped at 0)"}
