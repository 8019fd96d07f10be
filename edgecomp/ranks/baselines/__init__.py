"""Baseline rank selectors that COBLA (Li & Shi, ECCV 2018, Sec. 4) is compared against.

Every selector is `select_<name>(problem: RankProblem, **options) -> RankSelection`. The budgeted
ones (uniform, cptv, pos-greedy, pos-cvx) return ranks with `problem.feasible(ranks)` (every budget,
the extra ones of RankProblem.extra included) and raise
InfeasibleBudgetError when rank 1 in every layer does not fit; vbmf and gavish-donoho pick ranks
from each spectrum alone and only report the resulting cost (enforces_budgets=False). Ranks at or
above a layer's break-even rank are reported as its max rank (the layer stays unfactored).

On problems with choice layers (schemes tucker2 and auto, edgecomp.ranks.choices.ChoiceLayer) the budgeted
selectors solve the same problem over each layer's explicit choices (edgecomp.ranks.baselines.on_choices,
edgecomp.ranks.choices: their docstrings define each one there); vbmf and gavish-donoho need a spectrum and
refuse them.
"""

from edgecomp.ranks.baselines.cptv import select_cptv
from edgecomp.ranks.baselines.gavish_donoho import select_gavish_donoho
from edgecomp.ranks.baselines.pos_cvx import select_pos_cvx
from edgecomp.ranks.baselines.pos_greedy import select_pos_greedy
from edgecomp.ranks.baselines.uniform import select_uniform
from edgecomp.ranks.baselines.vbmf import select_vbmf

BASELINES = {
    "uniform": select_uniform,
    "cptv": select_cptv,
    "pos-greedy": select_pos_greedy,
    "pos-cvx": select_pos_cvx,
    "vbmf": select_vbmf,
    "gavish-donoho": select_gavish_donoho,
}

__all__ = [
    "BASELINES",
    "select_cptv",
    "select_gavish_donoho",
    "select_pos_cvx",
    "select_pos_greedy",
    "select_uniform",
    "select_vbmf",
]
