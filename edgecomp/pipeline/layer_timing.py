"""In-context layer timings: each candidate factored layer timed inside the whole network.

A layer exported and timed alone misses what its neighbours change: ONNX Runtime's layout transforms
(NCHWc reorders around a conv whose channel count breaks the SIMD block), the per-op thread-pool fork/join
at several threads, and the cache traffic of the new intermediate tensor. On the reference CNN at 2
threads, timed alone, features.1.0 looked faster factored up to rank 32 of 64; inside the model it was
already 50 µs (11%) slower at rank 42, and the MAC-budgeted model built from the isolated table measured
1.14x the original (BENCHMARKS.md, "Latency you can bank on").

In context, layer i at rank r is timed as the whole model with only that layer factored, V_i(r), in one
group with the original model O, and enters the table as

    t_i(r) = d_i + (V_i(r) - O)          (ms)

where d_i is the dense layer timed alone (the isolated table's entry) scaled by s <= 1 so that the dense
layers add up to no more than O (a layer timed alone carries a session's own overheads): fixed + sum_i d_i
is then the original's latency O, the table predicts O + sum_i (V_i(r_i) - O), a row keeps the isolated
table's meaning (dense ms; factored ms by rank), and
edgecomp.ranks.latency's fit, break-even and budget read it unchanged. Each group (O, then V_i at every
grid rank, the order rotated each round) is timed ROUNDS times; V_i(r) is O's median over the rounds times
the median ratio V_i(r)/O within a round, which cancels drift between groups.

It costs ROUNDS x (ranks + 1) whole-model timings per layer. `choose_layer_timing` takes in-context when
that is cheap (under IN_CONTEXT_AUTO_S by the whole model's own timing call), isolated otherwise: per-op
overheads matter most for small, fast models, which are exactly the cheap ones to time whole.

Cache entries (edgecomp.latency) are keyed by the architecture as well as the layer: the `layer` part of
the key adds {"in_context": digest of the exported graph without weights, "name": layer name, "grid": the
group's ranks}; rank "dense" stores the layer group's O, each rank its V_i(r), and "<scheme>:noise-margin"
the margin, all in ms.
"""

from __future__ import annotations

import copy
import hashlib
import statistics
import time
from pathlib import Path
from typing import Callable

LAYER_TIMINGS = ("auto", "isolated", "in-context")
ROUNDS = 5
MIN_MARGIN_MS = 1e-9  # a zero margin, as stored in the cache (whose entries are > 0 ms)
IN_CONTEXT_AUTO_S = 60.0  # auto: in-context when its whole-model timings are estimated to take at most this


def architecture_digest(onnx_path: Path) -> str:
    """sha256 (hex, 16) of an exported model's graph without its weights: every node (operator, wiring,
    attributes) and the inputs' shapes. What an in-context timing depends on besides the layer and the
    runtime; a module's repr would miss what its forward does (residual adds, concatenations)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    h = hashlib.sha256()
    for node in graph.node:
        h.update(node.SerializeToString(deterministic=True))
    for value in graph.input:
        h.update(value.type.SerializeToString(deterministic=True))
    return h.hexdigest()[:16]


def in_context_shape(shape: dict, digest: str, name: str, ranks: list[int]) -> dict:
    """The `layer` part of an in-context cache key: the layer's own shape, the network around it (`digest`),
    its name, and the group's rank grid (O, each V(r) and the margin were timed together as that group)."""
    return {**shape, "in_context": digest, "name": name, "grid": [int(r) for r in ranks]}


def choose_layer_timing(asked: str, call_s: float, calls: int) -> dict:
    """{"asked", "mode", "why", "estimate_s"}: what --layer-timing `asked` means for a table that needs
    `calls` whole-model timings and exports (ROUNDS x (ranks + 1) timings and `ranks` exports for each layer
    not in the cache), `call_s` seconds being their cost per timing (the whole model's own timing call, plus
    its export time spread over the timings)."""
    if asked not in LAYER_TIMINGS:
        raise ValueError(f"layer timing must be one of {', '.join(LAYER_TIMINGS)}, got {asked!r}")
    estimate = float(call_s) * int(calls)
    if asked != "auto":
        return {"asked": asked, "mode": asked, "why": f"--layer-timing {asked}", "estimate_s": estimate}
    if estimate <= IN_CONTEXT_AUTO_S:
        return {"asked": "auto", "mode": "in-context", "estimate_s": estimate,
                "why": f"auto: {calls} whole-model timings take about {estimate:.0f} s <= {IN_CONTEXT_AUTO_S:g} s"}
    return {"asked": "auto", "mode": "isolated", "estimate_s": estimate,
            "why": f"auto: in context would take {calls} whole-model timings, about {estimate:.0f} s > "
                   f"{IN_CONTEXT_AUTO_S:g} s; each layer is timed alone (--layer-timing in-context to insist)"}


def group_timings(time_model: Callable[[str], float], names: list[str],
                  rounds: int = ROUNDS) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each of `names` (the first is the reference, the original model) timed `rounds` times, the order
    rotated each round (so no model is always timed first, right after an export). Returns ({name: ms},
    {name: per-round ratios to the reference}): the reference at its median over rounds, every other name
    at that median times its median per-round ratio."""
    reference, others = names[0], names[1:]
    base: list[float] = []
    ratios: dict[str, list[float]] = {n: [] for n in others}
    for k in range(rounds):
        order = names[k % len(names):] + names[:k % len(names)]
        times = {n: max(time_model(n), 1e-9) for n in order}  # a timer's 0 ms p50 (below its clock)
        base.append(times[reference])
        for n in others:
            ratios[n].append(times[n] / times[reference])
    o = statistics.median(base)
    return {reference: o, **{n: o * statistics.median(r) for n, r in ratios.items()}}, ratios


def noise_margin_ms(model_ms: float, round_ratios: list[list[float]]) -> float:
    """How much faster than dense a factored layer must be, by the fit, to count as measurably faster in
    context: two standard errors of a median of R rounds, 2 x 1.2533 sigma / sqrt(R), with sigma the robust
    spread (1.4826 x MAD) of the per-round differences V - O around their per-rank medians, pooled over
    the layer's ranks (ms)."""
    residuals = [model_ms * (x - statistics.median(rs)) for rs in round_ratios for x in rs]
    if len(residuals) < 2:
        return 0.0
    sigma = 1.4826 * statistics.median(abs(v) for v in residuals)
    rounds = max(len(rs) for rs in round_ratios)
    return 2 * 1.2533 * sigma / rounds ** 0.5


def variant(module, name: str, factored):
    """A copy of `module` with the submodule `name` replaced by `factored` (the rest untouched)."""
    from edgecomp.factor.build import set_module

    out = copy.deepcopy(module)
    set_module(out, name, factored)
    return out.eval()


def time_layer_in_context(module, original: Path, name: str, ranks: list[int],
                          make_factored: Callable[[int], object], export: Callable[[object, str], Path], timer,
                          rounds: int = ROUNDS) -> tuple[float, list[float], float]:
    """(O, [V(r) for r in ranks], noise margin) in ms: the whole model (`original`, its ONNX file), and the
    whole model with layer `name` factored at each rank (make_factored(r)), timed in one group
    (`group_timings`), and `noise_margin_ms` of the group. export(module, stem) writes an ONNX file;
    timer(path) -> edgecomp.pipeline.latency_table.Timed."""
    paths = {"original": Path(original)}
    for r in ranks:
        paths[f"r{r}"] = export(variant(module, name, make_factored(r)), f"ctx.{name}.r{r}")
    times, ratios = group_timings(lambda n: timer(paths[n]).ms, list(paths), rounds)
    o = times["original"]
    return o, [times[f"r{r}"] for r in ranks], noise_margin_ms(o, [ratios[f"r{r}"] for r in ranks])


def elapsed(fn: Callable[[], object]) -> tuple[object, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
