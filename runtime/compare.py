"""Output agreement across runtimes on the same inputs (in the spirit of Polygraphy's compare).

For each pair of runs, candidate c against reference r, elementwise over the outputs:
    abs_i = |c_i - r_i|,   rel_i = abs_i / max(|r_i|, eps)
reported as max / mean / median / p99 of abs and of rel, and the pair passes when every element
satisfies the numpy.allclose rule  abs_i <= atol + rtol * |r_i|.
Every pair (i < j) of the dict's runs is compared, the earlier run as the reference side (so put
the reference model first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Mapping

import numpy as np

from edgecomp.errors import UserInputError

EPS = 1e-12


@dataclass(frozen=True)
class PairDiff:
    candidate: str
    reference: str
    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    p99_rel: float
    mismatch_fraction: float   # elements outside atol + rtol * |reference|
    passed: bool


@dataclass(frozen=True)
class CompareResult:
    atol: float
    rtol: float
    runs: list[str]
    pairs: list[PairDiff] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.pairs)

    def worst(self) -> PairDiff | None:
        return max(self.pairs, key=lambda p: p.max_abs, default=None)


def _pair(name_c: str, c: np.ndarray, name_r: str, r: np.ndarray, atol: float, rtol: float) -> PairDiff:
    if c.shape != r.shape:
        raise UserInputError(f"cannot compare {name_c} {c.shape} with {name_r} {r.shape}: shapes differ")
    a64, b64 = c.astype(np.float64).ravel(), r.astype(np.float64).ravel()
    if a64.size == 0:
        raise UserInputError(f"{name_c} and {name_r} are empty")
    absd = np.abs(a64 - b64)
    rel = absd / np.maximum(np.abs(b64), EPS)
    bad = ~(absd <= atol + rtol * np.abs(b64))  # NaN counts as a mismatch
    return PairDiff(
        candidate=name_c,
        reference=name_r,
        max_abs=float(np.max(absd)),
        mean_abs=float(np.mean(absd)),
        median_abs=float(np.median(absd)),
        p99_abs=float(np.percentile(absd, 99)),
        max_rel=float(np.max(rel)),
        mean_rel=float(np.mean(rel)),
        median_rel=float(np.median(rel)),
        p99_rel=float(np.percentile(rel, 99)),
        mismatch_fraction=float(np.mean(bad)),
        passed=not bool(np.any(bad)),
    )


def compare_outputs(runs: Mapping[str, np.ndarray], atol: float = 1e-4, rtol: float = 1e-3) -> CompareResult:
    """Pairwise differences between the outputs of several runs on identical inputs."""
    if len(runs) < 2:
        raise UserInputError(f"need at least two runs to compare, got {list(runs)}")
    if atol < 0 or rtol < 0:
        raise UserInputError("atol and rtol must be >= 0")
    names = list(runs)
    arrays = {k: np.asarray(v) for k, v in runs.items()}
    pairs = [_pair(b, arrays[b], a, arrays[a], atol, rtol) for a, b in combinations(names, 2)]
    return CompareResult(atol=float(atol), rtol=float(rtol), runs=names, pairs=pairs)
