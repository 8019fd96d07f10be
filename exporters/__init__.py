"""Exporters: verified ONNX, TensorRT engines, ONNX Runtime INT8 (QDQ) and ORT-format mobile models.

Every artifact is written atomically and checked numerically against its source before it is kept.
Optional back ends (tensorrt, cuda-python, onnxslim) are imported only when used (edgecomp.optional).
The whole chain, model or output directory to ONNX, INT8, .ort or engine, is one call:
edgecomp.exporters.convert.convert (not re-exported here, so the name keeps meaning the module).
"""

from edgecomp.exporters.bn_fold import fold_batchnorm
from edgecomp.exporters.metadata import build_metadata, metadata_from_recipe, read_metadata
from edgecomp.exporters.mobile import MobileResult, to_ort_format
from edgecomp.exporters.onnx_check import graph_inputs, graph_outputs, is_qdq, load_onnx_checked, node_counts
from edgecomp.exporters.onnx_export import OnnxExportResult, export_onnx
from edgecomp.exporters.ort_quant import QuantResult, quantize_int8
from edgecomp.exporters.tensorrt import (
    EngineBuildResult,
    TensorRTUnavailableError,
    build_engine,
    engine_command,
    trtexec_command,
    write_trtexec_script,
)

__all__ = [
    "EngineBuildResult",
    "MobileResult",
    "OnnxExportResult",
    "QuantResult",
    "TensorRTUnavailableError",
    "build_engine",
    "build_metadata",
    "engine_command",
    "export_onnx",
    "fold_batchnorm",
    "graph_inputs",
    "graph_outputs",
    "is_qdq",
    "load_onnx_checked",
    "metadata_from_recipe",
    "node_counts",
    "quantize_int8",
    "read_metadata",
    "to_ort_format",
    "trtexec_command",
    "write_trtexec_script",
]
