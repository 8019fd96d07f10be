"""edgecomp.convert(): a model, an ONNX file or an output directory -> verified ONNX (-> INT8 -> .ort /
TensorRT), the same conversion `edgecomp convert` and the `export` pipeline run (edgecomp.exporters.convert)."""

from __future__ import annotations

import os
from typing import Any

from edgecomp.api.devices import as_profile
from edgecomp.api.keywords import keywords_checked
from edgecomp.exporters.convert import ConvertResult, for_device
from edgecomp.exporters.convert import convert as _convert
from edgecomp.exporters.from_outdir import OutputDir

__all__ = ["ConvertResult", "OutputDir", "convert"]


def _calibration_array(data: Any, samples: int):
    """A torch Dataset or DataLoader as an (N, ...) float32 array of its first `samples` inputs."""
    from torch.utils.data import DataLoader, Dataset

    if not isinstance(data, (Dataset, DataLoader)):
        return data  # a data spec string, an array or an iterable of batches: the exporter takes these
    from edgecomp.api.data import as_dataset

    dataset = as_dataset(data, "calibration")
    x, _ = dataset.get_batch(range(min(samples, len(dataset))))
    return x.numpy()


def convert(
    source: Any,
    out: str | os.PathLike,
    *,
    input_shape: Any = None,
    device: Any = None,
    format: str | None = None,
    precision: str | None = None,
    calibration: Any = None,
    calibration_samples: int = 256,
    **options: Any,
) -> ConvertResult:
    """Convert `source` (an nn.Module, an .onnx file, or an output directory) into `out` and check every
    file numerically; returns a ConvertResult (.onnx_path, .artifact, .int8_onnx_path, ...).

    device     a profile (name, YAML path or DeviceProfile): the format (tensorrt for a TensorRT
               device, onnx otherwise), the precision and the INT8 weight range follow it
    format     onnx | ort | tensorrt (default: the device's, else onnx)
    precision  fp32 | int8 (| fp16 for tensorrt); default: the device's, else fp32 (fp16 for tensorrt)
    calibration  for INT8: a data spec, an (N, ...) array, a torch Dataset or a DataLoader
    Other keywords go to edgecomp.exporters.convert.convert (opset, dynamic_batch, simplify, tolerance,
    metadata, runs_on, engine_builder, log, ...).
    """
    profile = as_profile(device, required=False)
    fmt = format or ("tensorrt" if profile is not None and profile.runtime == "tensorrt" else "onnx")
    if profile is not None and "runs_on" not in options:
        precision, options["runs_on"] = for_device(fmt, precision, profile)
    return keywords_checked(_convert, "convert", source, out, input_shape=input_shape, format=fmt,
                            precision=precision, calibration=_calibration_array(calibration, calibration_samples),
                            calibration_samples=calibration_samples, **options)
