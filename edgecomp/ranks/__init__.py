"""Rank selection: pure functions of numbers (spectra, per-rank costs, gradients).

Nothing in this package imports torch. The torch glue that builds a RankProblem from a model
lives in edgecomp.compression.
"""

from edgecomp.ranks.problem import LayerSpectrum, LinearBudget, RankProblem, RankSelection

__all__ = ["LayerSpectrum", "LinearBudget", "RankProblem", "RankSelection"]
