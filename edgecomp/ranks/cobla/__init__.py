"""COBLA (Li & Shi, "Constrained Optimization Based Low-Rank Approximation of Deep Neural
Networks", ECCV 2018) as pure numpy: the relaxed problem (eq. 8) solved by SQP, the rounding
to integer ranks (eq. 9), and problem shrinking from heuristics.

Modules: projection (exact projection onto the budget polytope), lbfgs (compact L-BFGS),
qp (the SQP subproblem), sqp (the solver), rounding, shrink. No torch here: the glue supplies
the loss/gradient oracle and applies the mask scaling to the factored layers.
"""

from edgecomp.ranks.cobla.lbfgs import CompactLBFGS
from edgecomp.ranks.cobla.projection import BudgetPolytope, LinearPolytope, polytope
from edgecomp.ranks.cobla.qp import QPResult, solve_qp
from edgecomp.ranks.cobla.rounding import kept_components, round_ranks
from edgecomp.ranks.cobla.shrink import heuristic_budgets, shrink_from_heuristics
from edgecomp.ranks.cobla.sqp import REASONS, Oracle, SQPOptions, SQPResult, solve_relaxed

__all__ = [
    "BudgetPolytope",
    "CompactLBFGS",
    "LinearPolytope",
    "Oracle",
    "QPResult",
    "REASONS",
    "SQPOptions",
    "SQPResult",
    "heuristic_budgets",
    "kept_components",
    "polytope",
    "round_ranks",
    "shrink_from_heuristics",
    "solve_qp",
    "solve_relaxed",
]
