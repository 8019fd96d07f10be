"""Torch glue between a model and the pure-numbers rank selection (edgecomp.ranks).

model + ModelCost -> spectra -> RankProblem -> (method) -> ranks -> factored model -> checked costs.
"""
