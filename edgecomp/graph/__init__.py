"""Model graph: the Conv2d/Linear layers a traced forward pass touches, and their costs."""

from edgecomp.graph.cost import Decomposition, LayerCost, ModelCost, analyze_model, decompose_layer
from edgecomp.graph.trace import LayerInfo, trace_layers

__all__ = ["Decomposition", "LayerCost", "LayerInfo", "ModelCost", "analyze_model", "decompose_layer", "trace_layers"]
