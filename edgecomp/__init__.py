"""edgecomp: fit a trained PyTorch model to an edge device's budgets, export it, prove it on the target.

Data flows one way through the packages:
profile (edgecomp.profiles) -> model graph (edgecomp.graph) -> cost model (edgecomp.graph.cost)
-> rank selection (edgecomp.ranks, pure numpy) -> factored model (edgecomp.factor)
-> fine-tune (edgecomp.finetune) -> export (exporters) -> harness (runtime) -> report.
"""

__version__ = "0.1.0"
