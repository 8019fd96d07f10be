"""Latency as the compute cost: a per-layer table measured on the target replaces MACs.

For each decomposable layer i the target measured the original layer (t_i) and the factored layer
at a few ranks; a least-squares line t_i(r) = a_i + b_i r fits the factored latencies. The problem's
compute constraint (compute_unit "ms") then reads  fixed + sum_i t_i(r_i) <= latency budget,  still
linear in the masks (intercepts a_i go into the constant), with t_i(r) = t_i (original) from the
break-even rank on.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgecomp.ranks.problem import RankProblem

MIN_SLOPE_MS = 1e-6  # a measured slope can be ~0 or negative within noise; costs must increase with rank


def fit_line(ranks, latencies_ms) -> tuple[float, float]:
    """Least-squares (intercept, slope) of latency against rank; slope clipped to MIN_SLOPE_MS."""
    r = np.asarray(ranks, dtype=np.float64)
    t = np.asarray(latencies_ms, dtype=np.float64)
    if r.size == 1:
        return 0.0, max(float(t[0] / r[0]), MIN_SLOPE_MS)
    slope, intercept = np.polyfit(r, t, 1)
    slope = max(float(slope), MIN_SLOPE_MS)
    return float(max(0.0, intercept)), slope


def latency_problem(problem: RankProblem, table: dict, budget_ms: float) -> RankProblem:
    """`problem` with its compute costs (MACs) replaced by the measured latency table: every compute
    number of the result, its budget included, is in ms."""
    layers = []
    for layer in problem.layers:
        row = table["layers"][layer.name]
        layers.append(replace(layer, compute_per_rank=row["slope_ms"], compute_intercept=row["intercept_ms"],
                              original_compute=row["original_ms"]))
    return RankProblem(tuple(layers), compute_budget=float(budget_ms), param_budget=problem.param_budget,
                       fixed_compute=float(table["fixed_ms"]), fixed_params=problem.fixed_params, compute_unit="ms")
