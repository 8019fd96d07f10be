"""Hardware-friendly ranks: round each chosen rank down to a multiple the runtime runs fastest.

A factored layer's rank is the channel count between its two (or four) kernels. Runtimes tile those
channels: tensor cores like multiples of 8 (FP16) or 32 (INT8), CPU GEMM kernels the SIMD width. The
device profile records the multiple as `runtime.rank_multiple` (edgecomp.profiles); `--rank-multiple N`
overrides it. The rule, for a factored layer at rank r and a multiple N >= 1:

    r' = N * floor(r / N)   if r >= N
    r' = r                  if r <  N   (never below N: a layer that small keeps its rank)

r' <= r always, and every layer cost is non-decreasing in the rank (MACs and parameters exactly; a
latency fit a + b r has b > 0, edgecomp.ranks.latency.MIN_SLOPE_MS), so rounding down keeps every
budget the selection met, and keeps a factored layer factored (r' < r < its break-even rank). Layers
left dense are not touched.

Choice layers (scheme tucker2 / auto, edgecomp.ranks.choices.ChoiceLayer) choose among listed options,
so a rounded pair may not be one of them. Their choice moves to the most accurate listed option of
the same scheme whose ranks are all aligned (each rounded as above) and no larger than the chosen ones
(componentwise: for Tucker-2, both r1 and r2); the costs of one scheme grow with each rank, so the
budgets still hold. Without such an option the choice stays as it was, and the record says so.

COBLA keeps a set of singular components per layer (not always the first r): rounding keeps the
first r' of them in index order (the largest singular values) and their scales.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np


def round_rank(rank: int, multiple: int) -> int:
    """`rank` rounded down to a multiple of `multiple`; a rank below `multiple` is kept (see the module)."""
    if multiple < 1:
        raise ValueError(f"rank multiple must be >= 1, got {multiple}")
    if rank < multiple:
        return int(rank)
    return int(multiple * (rank // multiple))


def check_rank_multiple(value, option: str = "--rank-multiple") -> int | None:
    """`value` as a rank multiple (an integer >= 1), None for None; UserInputError otherwise."""
    from edgecomp.errors import UserInputError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserInputError(f"{option} must be an integer >= 1 (1: no rounding), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Rounded:
    """One layer's rounding: its rank (or Tucker-2 [r1, r2]) before and after, and a note when kept."""

    name: str
    before: int | list[int]
    after: int | list[int]
    note: str = ""

    def to_dict(self) -> dict:
        out = {"name": self.name, "before": self.before, "after": self.after}
        return {**out, "note": self.note} if self.note else out


def _choice_entry(layer, choice: int):
    """What a choice is, for comparison: (scheme, ranks tuple); None for the dense layer."""
    entry = layer.rank_entry(choice)
    if entry is None:
        return None
    ranks = tuple(int(r) for r in entry) if isinstance(entry, list) else (int(entry),)
    return layer.scheme(choice), ranks


def _round_choice(layer, choice: int, multiple: int) -> tuple[int, Rounded | None]:
    """A choice layer's aligned choice (see the module); (choice, None) when it needs no change."""
    entry = _choice_entry(layer, choice)
    if entry is None:
        return choice, None
    scheme, ranks = entry
    target = tuple(round_rank(r, multiple) for r in ranks)
    shown = (lambda rs: list(rs) if len(rs) > 1 else rs[0])
    if target == ranks:
        return choice, None
    best, best_error = None, np.inf
    for k in range(1, layer.max_rank):  # the factored choices (the last one is the dense layer)
        other = _choice_entry(layer, k)
        if other is None or other[0] != scheme:
            continue
        aligned = all(round_rank(r, multiple) == r for r in other[1])
        if aligned and all(o <= t for o, t in zip(other[1], target)) and layer.errors[k - 1] < best_error:
            best, best_error = k, float(layer.errors[k - 1])
    if best is None:
        return choice, Rounded(layer.name, shown(ranks), shown(ranks),
                               f"no listed {scheme} choice at multiples of {multiple} below it: kept")
    return best, Rounded(layer.name, shown(ranks), shown(_choice_entry(layer, best)[1]))


def round_ranks(problem, ranks, multiple: int) -> tuple[np.ndarray, list[Rounded]]:
    """Each factored layer of `problem` (an edgecomp.ranks.RankProblem) at its rank in `ranks` (one per
    layer, in problem.layers' order) rounded down to `multiple`; returns the new ranks and one Rounded
    per factored layer (before == after where it was already aligned or kept). Pure: no torch."""
    from edgecomp.ranks.choices import ChoiceLayer

    multiple = int(multiple)
    out = np.asarray(ranks, dtype=np.int64).copy()
    records: list[Rounded] = []
    for i, layer in enumerate(problem.layers):
        r = int(out[i])
        if not layer.is_factored(r):
            continue
        if isinstance(layer, ChoiceLayer):
            out[i], record = _round_choice(layer, r, multiple)
            entry = _choice_entry(layer, r)[1]
            same = list(entry) if len(entry) > 1 else entry[0]
            records.append(record or Rounded(layer.name, same, same))
            continue
        out[i] = round_rank(r, multiple)
        records.append(Rounded(layer.name, r, int(out[i])))
    return out, records


def round_selection(problem, selection, multiple: int | None, components: Mapping | None = None,
                    scales: Mapping | None = None):
    """(selection, components, scales) with every factored rank rounded down to `multiple` (None or 1:
    unchanged). The new selection's info["rank_rounding"] = {"multiple", "layers": [Rounded.to_dict()]};
    COBLA's kept components and their scales keep their first r' entries (see the module)."""
    if multiple is None or int(multiple) <= 1:
        return selection, components, scales
    ranks, records = round_ranks(problem, selection.ranks, int(multiple))
    info = {**selection.info, "rank_rounding": {"multiple": int(multiple), "layers": [r.to_dict() for r in records]}}
    rounded = replace(selection, ranks=ranks, info=info)
    if components is None:
        return rounded, components, scales
    components, scales = dict(components), dict(scales) if scales is not None else None
    for record in records:
        if isinstance(record.after, int) and record.after != record.before and record.name in components:
            kept = np.asarray(components[record.name])
            order = np.argsort(kept, kind="stable")[:record.after]  # the largest singular values first
            components[record.name] = kept[order]
            if scales is not None and record.name in scales:
                scales[record.name] = np.asarray(scales[record.name]).reshape(-1)[order]
    return rounded, components, scales


def resolve_rank_multiple(override: int | None, profile, precision: str | None) -> tuple[int, str]:
    """(multiple, where it came from): `override` (--rank-multiple), else the device profile's
    runtime.rank_multiple at `precision`, else 1 (no rounding)."""
    override = check_rank_multiple(override)
    if override is not None:
        return override, f"--rank-multiple {override}"
    if profile is not None:
        multiple = profile.rank_multiple(precision)
        if multiple > 1:
            return multiple, profile.rank_multiple_source(precision)
    return 1, "none"
