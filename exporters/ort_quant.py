"""Static INT8 quantization (QDQ format) with ONNX Runtime, measured against the float model.

Each activation tensor t gets a scale and zero point from calibration (Q(t) = clip(round(t / s) + z)):
  minmax:     [min t, max t] over the calibration set;
  entropy:    the clipping threshold minimising the KL divergence between the float and quantized
              histograms;
  percentile: the threshold at the given percentile of |t|.
Weights are quantized symmetrically (per output channel when per_channel), in [-127, 127], or in
[-64, 64] (reduce_range) for CPUs whose int8 kernels are exact only with 7-bit weights: x86 without
VNNI, where ONNX Runtime adds u8*s8 product pairs in saturating int16 (exporters.cpu_features has the
arithmetic and the decision; the choice is recorded in the model's metadata). The result is an ONNX
graph of QuantizeLinear/DequantizeLinear pairs around float ops that ONNX Runtime (CPU, mobile) and
TensorRT (explicit quantization; needs symmetric activations) both run as INT8.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecomp.errors import UserInputError, VerificationError
from edgecomp.io import atomic_path
from edgecomp.exporters.entropy import install_fast_entropy
from edgecomp.exporters.calib_data import check_sample_shape, concat, to_batches
from edgecomp.exporters.cpu_features import EXACT_X86_INT8, Int8Settings, host_cpu, int8_settings, saturates
from edgecomp.exporters.metadata import int8_metadata
from edgecomp.exporters.onnx_check import graph_inputs, load_onnx_checked, node_counts
from edgecomp.exporters.verify import compare_outputs, cpu_session, run_batched

CALIBRATE_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QuantResult:
    path: Path
    size_bytes: int
    float_size_bytes: int
    calibrate_method: str
    per_channel: bool
    symmetric_activations: bool
    calibration_samples: int
    eval_samples: int
    eval_source: str  # "eval_data", or "calibration" when no separate evaluation data was given
    top1_agreement: float | None  # fraction of samples whose argmax is unchanged (2-D outputs only)
    max_abs_error: float
    mean_abs_error: float
    relative_error: float
    float_accuracy: float | None = None  # top-1 accuracy in [0, 1] when labels were given
    int8_accuracy: float | None = None
    accuracy_drop_points: float | None = None  # 100 * (float - int8) accuracy
    node_counts: dict[str, int] = field(default_factory=dict)
    preprocessed: bool = True
    notes: list[str] = field(default_factory=list)
    int8_settings: Int8Settings | None = None  # weight range and the CPU it was chosen for (also in the metadata)
    exact_kernels: bool = False  # measured with ONNX Runtime's exact x86 int8 kernels (see int8_reference_session)




def int8_reference_session(model):
    """A CPU session that computes a QDQ model's integer arithmetic exactly on any host.

    The default session on an x86 CPU without VNNI saturates on full-range weights (see
    exporters.cpu_features); EXACT_X86_INT8 switches those kernels to exact ones, so a model made for
    another device (an ARM phone, a VNNI server, a GPU) is measured as that device computes it.
    """
    from edgecomp.exporters.verify import cpu_session

    return cpu_session(model, {EXACT_X86_INT8: "1"})


def _reader(input_name: str, batches: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self):
            self._iter = iter(batches)

        def get_next(self):
            batch = next(self._iter, None)
            return None if batch is None else {input_name: batch}

        def rewind(self):
            self._iter = iter(batches)

    return _Batches()


def _calibrate(model: Path, work: Path, input_name: str, batches, method: str, percentile: float) -> Path | None:
    """Activation ranges computed with TensorRT-style histogram settings; returns an ORT calibration cache.

    quantize_static does not forward histogram sizes, and its entropy default (128 bins searched
    for 128 quantized bins) leaves a single candidate threshold, i.e. plain min/max. Entropy here
    searches a 2048-bin histogram for the 128-bin threshold of least KL divergence
    (exporters.entropy, eq. in its docstring). Returns None
    (quantize_static then calibrates itself) on onnxruntime versions without calibration caches.
    """
    import inspect

    from onnxruntime.quantization import CalibrationMethod, create_calibrator, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return None
    from onnxruntime.quantization.calibrate import save_tensors_data

    options = {
        "minmax": (CalibrationMethod.MinMax, {}),
        "entropy": (CalibrationMethod.Entropy, {"num_bins": 2048, "num_quantized_bins": 128}),
        "percentile": (CalibrationMethod.Percentile, {"num_bins": 2048, "percentile": percentile}),
    }
    calibrate_method, extra = options[method]
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress
        calibrator = create_calibrator(
            str(model),
            augmented_model_path=str(work / "augmented.onnx"),
            calibrate_method=calibrate_method,
            extra_options=extra,
        )
        calibrator.collect_data(_reader(input_name, batches))
        if method == "entropy":
            install_fast_entropy(calibrator.collector)
        ranges = calibrator.compute_data()
    cache = work / "ranges.json"
    save_tensors_data(ranges, cache)
    return cache


def _preprocess(src: Path, dst: Path) -> str | None:
    """quant_pre_process (symbolic shape inference + graph cleanup); returns a note if it had to be skipped."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(dst))
        return None
    except Exception as exc:  # pre-processing is an optimisation; quantizing the raw graph still works
        return f"quant_pre_process skipped: {type(exc).__name__}: {exc}"


def _labels(eval_labels, n: int) -> np.ndarray | None:
    if eval_labels is None:
        return None
    labels = np.asarray(eval_labels.detach().cpu().numpy() if hasattr(eval_labels, "detach") else eval_labels)
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != n:
        raise UserInputError(f"{len(labels)} labels for {n} evaluation samples")
    return None if (labels < 0).any() else labels


def quantize_int8(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration,
    *,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    eval_data=None,
    eval_labels=None,
    symmetric_activations: bool = False,
    calib_batch_size: int = 32,
    percentile: float = 99.999,
    max_accuracy_drop: float | None = None,
    runs_on="host",
) -> QuantResult:
    """Quantize `onnx_path` to a QDQ INT8 model at `out_path` (atomic) and measure it against the float model.

    calibration: an (N, ...) float array or an iterable of batches (arrays, tensors or (x, y) pairs).
    eval_data/eval_labels: held-out inputs (and optional int labels) for the report; without them the
    calibration inputs are reused (then the agreement is in-sample). symmetric_activations=True gives
    zero points of 0, which TensorRT's explicit quantization requires. With max_accuracy_drop (points)
    a larger top-1 accuracy drop raises VerificationError and nothing is written.

    runs_on: what will run the model, which sets the weight range (exporters.cpu_features.int8_settings):
    "host" (this machine's CPU), a CpuInfo (e.g. `cpu_from_agent(report["environment"])` for the
    target), "gpu" (TensorRT) or "unknown" (7-bit weights, exact on every CPU). The model is measured
    with the default session when that is exact here, else with int8_reference_session (noted).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibrate_method not in CALIBRATE_METHODS:
        raise UserInputError(f"calibrate_method must be one of {CALIBRATE_METHODS}, got {calibrate_method!r}")
    try:
        settings = int8_settings(runs_on)
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if onnx_path.resolve() == out_path.resolve():
        raise UserInputError("the quantized model must be written to a different path than its float source")
    model = load_onnx_checked(onnx_path)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserInputError(f"{onnx_path}: INT8 quantization supports one-input models, this one has {len(inputs)}")
    spec = inputs[0]
    fixed = spec.dims[0] if not spec.dynamic_batch else None
    calib = to_batches(calibration, fixed or calib_batch_size)
    if fixed and len(calib[-1]) != fixed:
        calib = calib[:-1]  # a fixed-batch graph cannot take the short remainder
        if not calib:
            raise UserInputError(f"need at least {fixed} calibration samples for this fixed-batch model")
    check_sample_shape(calib, spec.dims, f"{onnx_path.name}'s input")
    evaluation = concat(to_batches(eval_data)) if eval_data is not None else concat(calib)
    check_sample_shape([evaluation], spec.dims, f"{onnx_path.name}'s input")
    labels = _labels(eval_labels, len(evaluation))

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgecomp-quant-") as work, atomic_path(out_path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        note = _preprocess(onnx_path, prepared)
        if note:
            notes.append(note)
            prepared = onnx_path
        preprocessed = note is None
        ranges = _calibrate(prepared, Path(work), spec.name, calib, calibrate_method, percentile)
        kwargs = {"calibration_cache_path": str(ranges)} if ranges else {}
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(tmp),
                None if ranges else _reader(spec.name, calib),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=settings.reduce_range,  # weights only; activations keep their int8 range
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[calibrate_method],
                extra_options={
                    "ActivationSymmetric": symmetric_activations,
                    "WeightSymmetric": True,
                    "CalibPercentile": percentile,
                },
                **kwargs,
            )
        extra = int8_metadata(settings, per_channel=per_channel, symmetric_activations=symmetric_activations,
                              calibrate_method=calibrate_method)
        quantized = _stamp(tmp, model, calibrate_method, extra)

        exact = not settings.reduce_range and saturates(host_cpu())
        if exact:
            notes.append(
                f"measured with exact int8 kernels ({EXACT_X86_INT8}=1): this host's x86 CPU has no VNNI and would "
                f"saturate on the full-range weights chosen for {settings.runs_on}"
            )
        float_out = run_batched(cpu_session(onnx_path), evaluation, calib_batch_size)
        int8_out = run_batched((int8_reference_session if exact else cpu_session)(tmp), evaluation, calib_batch_size)
        errors = compare_outputs(float_out[:1], int8_out[:1])
        agreement = float_acc = int8_acc = drop = None
        if float_out[0].ndim == 2:
            f_top, q_top = float_out[0].argmax(1), int8_out[0].argmax(1)
            agreement = float((f_top == q_top).mean())
            if labels is not None:
                float_acc, int8_acc = float((f_top == labels).mean()), float((q_top == labels).mean())
                drop = 100.0 * (float_acc - int8_acc)
        elif labels is not None:
            notes.append("labels ignored: the model output is not (batch, classes)")
        if max_accuracy_drop is not None and drop is not None and drop > max_accuracy_drop:
            raise VerificationError(
                f"INT8 top-1 accuracy drop {drop:.2f} points > allowed {max_accuracy_drop:.2f} "
                f"(float {100 * float_acc:.2f}%, int8 {100 * int8_acc:.2f}%); {out_path} was not written"
            )

    return QuantResult(
        path=out_path,
        size_bytes=out_path.stat().st_size,
        float_size_bytes=onnx_path.stat().st_size,
        calibrate_method=calibrate_method,
        per_channel=per_channel,
        symmetric_activations=symmetric_activations,
        calibration_samples=int(sum(len(b) for b in calib)),
        eval_samples=int(len(evaluation)),
        eval_source="eval_data" if eval_data is not None else "calibration",
        top1_agreement=agreement,
        max_abs_error=errors.max_abs_error,
        mean_abs_error=errors.mean_abs_error,
        relative_error=errors.relative_error,
        float_accuracy=float_acc,
        int8_accuracy=int8_acc,
        accuracy_drop_points=drop,
        node_counts=quantized,
        preprocessed=preprocessed,
        notes=notes,
        int8_settings=settings,
        exact_kernels=exact,
    )


def _stamp(path: Path, source_model, calibrate_method: str, extra: dict[str, str]) -> dict[str, int]:
    """Copy the float model's metadata onto the quantized file, mark its precision, check it; return op counts."""
    import onnx

    model = onnx.load(str(path))
    existing = {p.key for p in model.metadata_props}
    for prop in source_model.metadata_props:
        if prop.key not in existing:
            model.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in (("edgecomp.precision", "int8"), ("edgecomp.calibration", calibrate_method), *extra.items()):
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"the quantized ONNX graph is invalid: {exc}") from exc
    onnx.save(model, str(path))
    return node_counts(model)
