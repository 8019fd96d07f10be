"""Latency measured on the target, per layer: as the compute cost, and as the never-slower rule.

For each decomposable layer i the target measured the original (dense) layer (d_i) and the factored layer
at a few ranks; a least-squares line t_i(r) = a_i + b_i r fits the factored latencies (`fit_line`).

Latency as the cost (`latency_problem`, `edgecomp export --cost latency`): the problem's compute
constraint (compute_unit "ms") reads  fixed + sum_i t_i(r_i) <= latency budget,  still linear in the
masks (the intercepts a_i go into the constant), with t_i(r) = d_i from the break-even rank on.

Latency as a third budget (`latency_budget`, `with_latency_budget`): the same row as a LinearBudget
("latency", ms) beside the MAC and memory budgets, so all three can bind at once. Its break-even rule is
the one `latency_problem` applies (factored no faster than dense, by the fit: left dense), or with
never_slower=True the never-slower rank below. `predicted_latency_ms` is the whole-model latency the table
predicts for chosen ranks, either way (for the report's predicted vs measured).

Never slower, layer by layer (`apply_latency_break_even`): a factored layer must be measurably faster
than the dense one. The latency break-even rank of layer i is

    b_i^lat = min { r >= 1 : a_i + b_i r >= min(NOT_FASTER * d_i, d_i - margin_i) }      (max_rank + 1 if none)

with NOT_FASTER = 0.95: a factored layer less than 5% faster than dense, by the fit, is within the noise
of per-layer timings and counts as not faster; margin_i is the row's measured timing noise where the table
has one (in context, edgecomp.pipeline.layer_timing.noise_margin_ms), else 0. Each layer's break-even rank becomes
min(its own, b_i^lat), so every method reads the ranks from there on as "left dense" (the problem's
existing break-even rule); b_i^lat = 1 leaves the layer dense at every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import numpy as np

from edgecomp.ranks.problem import LayerSpectrum, LinearBudget, RankProblem

MIN_SLOPE_MS = 1e-6  # a measured slope can be ~0 or negative within noise; costs must increase with rank
NOT_FASTER = 0.95  # factored >= NOT_FASTER x dense (by the fitted line): not measurably faster


def fit_line(ranks, latencies_ms) -> tuple[float, float]:
    """Least-squares (intercept, slope) of latency against rank; slope clipped to MIN_SLOPE_MS."""
    r = np.asarray(ranks, dtype=np.float64)
    t = np.asarray(latencies_ms, dtype=np.float64)
    if r.size == 1:
        return 0.0, max(float(t[0] / r[0]), MIN_SLOPE_MS)
    slope, intercept = np.polyfit(r, t, 1)
    slope = max(float(slope), MIN_SLOPE_MS)
    return float(max(0.0, intercept)), slope


def fitted_ms(row: Mapping[str, Any], rank: int) -> float:
    """The fitted latency a + b * rank of a table row (edgecomp.pipeline.latency_table)."""
    return float(row["intercept_ms"]) + float(row["slope_ms"]) * int(rank)


def not_faster_ms(row: Mapping[str, Any]) -> float:
    """The fitted latency from which a factored layer is not measurably faster than its dense form:
    min(NOT_FASTER x dense, dense - margin), margin_ms being the row's timing noise where the table
    measured it (in context, edgecomp.pipeline.layer_timing.noise_margin_ms), else 0."""
    dense = float(row["original_ms"])
    return min(NOT_FASTER * dense, dense - float(row.get("margin_ms") or 0.0))


def latency_break_even_rank(row: Mapping[str, Any], max_rank: int) -> int:
    """The smallest rank r >= 1 whose fitted latency is >= `not_faster_ms` (NOT_FASTER x the dense layer's,
    or less by the row's noise margin); max_rank + 1 when the factored layer is measurably faster at every
    rank (see the module docstring)."""
    threshold = not_faster_ms(row)
    intercept, slope = float(row["intercept_ms"]), float(row["slope_ms"])
    r = math.ceil((threshold - intercept) / slope - 1e-12)
    return int(max(1, min(r, max_rank + 1)))


@dataclass(frozen=True)
class NeverSlowerLayer(LayerSpectrum):
    """A LayerSpectrum whose break-even rank is also capped by its latency break-even rank: from
    `latency_break_even` on, the layer is left dense (cost and is_factored follow, as for any break-even)."""

    latency_break_even: int = 0  # 0: no cap

    @property
    def break_even_rank(self) -> int:
        own = super().break_even_rank
        return min(own, self.latency_break_even) if self.latency_break_even >= 1 else own


def _capped(layer: LayerSpectrum, cap: int) -> LayerSpectrum:
    if isinstance(layer, NeverSlowerLayer):
        return replace(layer, latency_break_even=min(cap, layer.latency_break_even or cap))
    values = {f.name: getattr(layer, f.name) for f in fields(layer)}
    return NeverSlowerLayer(**values, latency_break_even=cap)


def apply_latency_break_even(problem: RankProblem, table: Mapping[str, Any]) -> RankProblem:
    """`problem` with each measured layer's break-even rank lowered to min(current, latency break-even).

    Layers the table did not measure are unchanged, and so are ChoiceLayers (tucker2 / auto): their
    choices are not one rank of one scheme, and the table times one scheme's ranks only.
    """
    from edgecomp.ranks.choices import ChoiceLayer

    layers = []
    for layer in problem.layers:
        row = table["layers"].get(layer.name)
        if row is None or isinstance(layer, ChoiceLayer):
            layers.append(layer)
            continue
        layers.append(_capped(layer, latency_break_even_rank(row, layer.max_rank)))
    return RankProblem(tuple(layers), compute_budget=problem.compute_budget, param_budget=problem.param_budget,
                       fixed_compute=problem.fixed_compute, fixed_params=problem.fixed_params,
                       compute_unit=problem.compute_unit, extra=problem.extra)


def latency_problem(problem: RankProblem, table: dict, budget_ms: float) -> RankProblem:
    """`problem` with its compute costs (MACs) replaced by the measured latency table: every compute
    number of the result, its budget included, is in ms.

    A layer stays dense from its MAC/parameter break-even rank on, as in `problem`: the built model is
    checked against the MAC problem, and both must agree on which layers are factored."""
    layers = []
    for layer in problem.layers:
        row = table["layers"][layer.name]
        timed = replace(layer, compute_per_rank=row["slope_ms"], compute_intercept=row["intercept_ms"],
                        original_compute=row["original_ms"])
        layers.append(_capped(timed, layer.break_even_rank))
    return RankProblem(tuple(layers), compute_budget=float(budget_ms), param_budget=problem.param_budget,
                       fixed_compute=float(table["fixed_ms"]), fixed_params=problem.fixed_params, compute_unit="ms",
                       extra=problem.extra)


LATENCY = "latency"  # the LinearBudget's name


def latency_budget(problem: RankProblem, table: Mapping[str, Any], budget_ms: float, *,
                   never_slower: bool = False) -> LinearBudget:
    """The measured per-layer latency table (edgecomp.pipeline.latency_table) as a LinearBudget on
    `problem`'s layers: per layer slope_ms per rank, intercept_ms, original_ms dense; fixed_ms for the rest
    of the network; budget_ms (+inf: reported, not enforced). A layer is left dense from the first rank whose
    fitted latency reaches its dense latency (as in `latency_problem`), or with never_slower=True NOT_FASTER
    times it (`latency_break_even_rank`, the never-slower rule). Every layer of `problem` must be in the table."""
    missing = [layer.name for layer in problem.layers if layer.name not in table["layers"]]
    if missing:
        raise ValueError(f"the latency table has no row for layers {missing}")
    rows = [table["layers"][layer.name] for layer in problem.layers]
    return LinearBudget(LATENCY, "ms", per_rank=np.array([float(r["slope_ms"]) for r in rows]),
                        intercept=np.array([float(r["intercept_ms"]) for r in rows]),
                        original=np.array([float(r["original_ms"]) for r in rows]), budget=float(budget_ms),
                        fixed=float(table["fixed_ms"]), break_even_ratio=NOT_FASTER if never_slower else 1.0)


def with_latency_budget(problem: RankProblem, table: Mapping[str, Any], budget_ms: float, *,
                        never_slower: bool = False) -> RankProblem:
    """`problem` (MACs and memory budgets unchanged) with the latency table as a third budget
    (`latency_budget`), beside any extra budget it already has."""
    return problem.with_extra((*problem.extra, latency_budget(problem, table, budget_ms,
                                                              never_slower=never_slower)))


def predicted_latency_ms(problem: RankProblem, ranks) -> float:
    """The whole-model latency (ms) the latency table predicts for `ranks` (break-even rule applied): the
    problem's "latency" budget row (`with_latency_budget`), or its compute cost when that is in ms
    (`latency_problem`)."""
    for k, b in enumerate(problem.extra):
        if b.name == LATENCY and b.unit == "ms":
            return float(problem.extra_cost(ranks)[k])
    if problem.compute_unit == "ms":
        return float(problem.cost(ranks)[0])
    raise ValueError("the problem carries no latency: build it with with_latency_budget or latency_problem")


def layer_latency_rows(table: Mapping[str, Any], ranks: Mapping[str, int | None]) -> list[dict[str, Any]]:
    """One row per layer of the table for a report: dense ms, factored ms at the chosen rank (from the fit),
    and what was chosen and why.

    `ranks`: each layer's built rank, None (or absent) where it was left dense; from a compress report,
    {row["name"]: row["rank"] if row["factored"] else None for row in report["layers"]}.
    Row keys: name, dense_ms, rank, factored_ms (the fit at `rank`; None when dense), latency_break_even_rank,
    chosen ("factored" | "dense": what was built), faster (False for a factored layer the never-slower rule
    would have left dense; None when dense), why.
    """
    rows = []
    for name, row in table["layers"].items():
        dense = float(row["original_ms"])
        be = latency_break_even_rank(row, int(row.get("max_rank") or max(row["ranks"])))
        rank = ranks.get(name)
        out = {"name": name, "dense_ms": dense, "rank": rank, "factored_ms": None, "latency_break_even_rank": be}
        limit = (f"{not_faster_ms(row):.4g} ms ({dense:.4g} ms dense less its {row['margin_ms']:.3g} ms timing noise)"
                 if not_faster_ms(row) < NOT_FASTER * dense else f"{NOT_FASTER:g} x {dense:.4g} ms dense")
        if rank is None:
            if be > 1:
                why = "left unfactored by the rank selection"
            elif not_faster_ms(row) <= 0:
                why = (f"never measurably faster factored: its {dense:.4g} ms dense time is within the "
                       f"{float(row['margin_ms']):.3g} ms timing noise of the whole model")
            else:
                why = f"never measurably faster factored: even rank 1 takes {fitted_ms(row, 1):.4g} ms >= {limit}"
            rows.append({**out, "chosen": "dense", "faster": None, "why": why})
            continue
        factored = fitted_ms(row, int(rank))
        faster = int(rank) < be
        why = (f"{factored:.4g} ms at rank {rank} < {limit}" if faster else
               f"not measurably faster ({factored:.4g} ms at rank {rank} >= {limit}): "
               "built without the never-slower rule")
        rows.append({**out, "factored_ms": factored, "chosen": "factored", "faster": faster, "why": why})
    return rows
