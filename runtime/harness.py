"""measure / profile_artifact: one measurement of an artifact on a target, as a ProfileReport.

One measurement: resolve the artifact -> build the input pool -> open the transport for the target
-> stage agent/model/inputs by sha256 -> the agent runs an outputs pass (when accuracy, agreement or
comparison needs outputs), warms up, times -> statistics, accuracy, agreement, comparison on the
host. When a percentile is gated, the iteration count is raised to MLPerf's early-stopping minimum
for it (64 for p90, 662 for p99 at 99% confidence) so its upper bound exists.

Two halves: prepare_measurement (host only: artifact, inputs, reference outputs) and measure_prepared
(one target). measure() is both; a fleet (runtime.fleet) prepares once and measures every board.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.runtime import gates as G
from edgecomp.runtime.accuracy import accuracy_report, agreement_report
from edgecomp.runtime.artifacts import Artifact, resolve_artifact
from edgecomp.runtime.crosscheck import compare_runtimes
from edgecomp.runtime.inputs import InputPool, build_inputs, write_pool
from edgecomp.runtime.reference import ReferenceSpec, find_reference, run_reference
from edgecomp.runtime.remote import run_agent
from edgecomp.runtime.report import ProfileReport
from edgecomp.runtime.stats import (DEFAULT_CONFIDENCE, DEFAULT_INTERVAL_LEVEL, default_cv_threshold,
                           min_samples_for_percentile, summarize)
from edgecomp.runtime.transport import Transport, open_transport, parse_target

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                 "MIGraphXExecutionProvider", "DmlExecutionProvider")


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure. Timed phase ends when BOTH `iterations` and `min_duration_s` are reached."""

    warmup_s: float = 1.0
    iterations: int = 100
    min_duration_s: float = 1.0
    max_duration_s: float | None = None
    samples: int | None = None            # input pool size (default 1000 for data, 16 batches random)
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE          # one-sided bounds used by gates
    interval_level: float = DEFAULT_INTERVAL_LEVEL  # two-sided intervals shown in reports
    cv_threshold: float | None = None     # on robust CV (stats.py eq. 2); None: 0.10 CPU, 0.025 GPU
    unstable_policy: str = "widen"        # unstable run: widen the latency bounds, or "warn" only (gates.py)
    timeout_s: float | None = None        # wall-clock limit for the agent run (None: keepalives only)

    def validate(self) -> None:
        """Every setting in range and finite (nan compares false, so each test is written to catch it)."""
        if not (0 <= self.warmup_s < math.inf and 0 <= self.min_duration_s < math.inf):
            raise UserInputError("--warmup and --min-duration must be finite numbers >= 0")
        if self.iterations < 1:
            raise UserInputError("--iterations must be >= 1")
        if self.max_duration_s is not None and not 0 < self.max_duration_s < math.inf:
            raise UserInputError("--max-duration must be a finite number > 0")
        if self.cv_threshold is not None and not 0 < self.cv_threshold < math.inf:
            raise UserInputError("--cv-threshold must be a finite number > 0")
        if not 0 < self.confidence < 1:
            raise UserInputError(f"--confidence must be in (0, 1), got {self.confidence}")
        if self.samples is not None and self.samples < 1:
            raise UserInputError(f"--samples must be >= 1, got {self.samples}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise UserInputError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if self.timeout_s is not None and not 0 < self.timeout_s < math.inf:
            raise UserInputError("--timeout must be a finite number > 0")
        try:
            G.unstable_policy_name(self.unstable_policy)
        except ValueError as exc:
            raise UserInputError(str(exc)) from None


def check_gate_options(latency_budget_ms: float | None = None, percentile: float | None = None,
                       max_accuracy_drop: float | None = None) -> None:
    """The gates' own settings, checked before any work by verify, profile and export alike."""
    if latency_budget_ms is not None and not 0 < latency_budget_ms < math.inf:
        raise UserInputError(f"--latency-budget-ms must be a finite number > 0, got {latency_budget_ms}")
    if percentile is not None and not 0 < percentile < 100:
        raise UserInputError(f"--percentile must be in (0, 100), got {percentile}")
    if max_accuracy_drop is not None and not 0 <= max_accuracy_drop <= 1:
        raise UserInputError(f"--max-accuracy-drop must be a fraction in [0, 1], got {max_accuracy_drop}")


@dataclass(frozen=True)
class TargetOptions:
    """Overrides for reaching the target (default: the device profile's target section)."""

    python: str | None = None
    workdir: str | None = None
    ssh_options: tuple[str, ...] = ()
    identity_file: str | None = None
    connect_timeout_s: float = 10.0


@dataclass
class Measurement:
    """A finished measurement and the arrays the gates may need."""

    report: ProfileReport
    artifact: Artifact
    pool: InputPool
    outputs: np.ndarray | None
    reference_outputs: np.ndarray | None
    reference: ReferenceSpec | None


# ---- target ---------------------------------------------------------------------------------

def target_url(profile, target: str | None) -> str:
    """The target a run uses: `target` (--target) if given, else the profile's: local, its ssh URL, or
    adb[://SERIAL]. The one place a run's target is resolved (measurement, export, engine builds)."""
    if target is not None:
        return target
    spec = profile.target
    if spec.transport == "local":
        return "local"
    if spec.transport == "ssh":
        if not spec.url:
            raise UserInputError(f"device profile {profile.name!r} has no target url; pass --target "
                                 "ssh://user@host or --target local (a stand-in)")
        return spec.url
    return f"adb://{spec.url}" if spec.url else "adb"


def resolve_target(profile, target: str | None, options: TargetOptions) -> tuple[Transport, dict[str, Any]]:
    """The transport to use and how the report describes it (stand-in when `local` replaces a device)."""
    spec = profile.target
    target = target_url(profile, target)
    parsed = parse_target(target)
    same_kind = parsed.kind == spec.transport and parsed.kind != "local"
    transport = open_transport(
        target,
        python=options.python or (spec.python if same_kind else None),
        workdir=options.workdir or (spec.workdir if same_kind else None),
        ssh_options=options.ssh_options,
        identity_file=options.identity_file,
        connect_timeout=options.connect_timeout_s,
    )
    stand_in = parsed.kind == "local" and spec.transport != "local"
    info = {
        "url": transport.url,
        "transport": parsed.kind,
        "profile_target": spec.url or spec.transport,
        "stand_in": stand_in,
        "python": transport.python,
        "workdir": transport.workdir,
    }
    if stand_in:
        info["note"] = (f"measured on this host as a stand-in for {profile.name}; the numbers describe this "
                        "machine, not the device")
    return transport, info


# ---- measurement ----------------------------------------------------------------------------

@dataclass
class PreparedRun:
    """The host-side half of a measurement, done once and shared by every target (board) it runs on:
    the resolved artifact, the input pool, the agent's request, the reference model's outputs. Each
    target's run copies what it changes, so one PreparedRun can serve several threads at once."""

    profile: Any
    artifact: Artifact
    pool: InputPool
    request: dict[str, Any]
    settings: MeasureSettings
    iterations: int
    batch_size: int
    percentile: float | None
    providers: Sequence[str] | None
    explicit_reference: bool
    ref: ReferenceSpec | None
    reference_outputs: np.ndarray | None
    want_outputs: bool
    compare: bool
    atol: float
    rtol: float
    trust_code: bool
    metric: Any
    notes: list[str]


def prepare_measurement(
    artifact_path: str | Path,
    profile,
    *,
    data_spec: str | None = None,
    batch_size: int = 1,
    percentile: float | None = None,
    settings: MeasureSettings | None = None,
    providers: Sequence[str] | None = None,
    reference: ReferenceSpec | str | None = None,
    need_reference: bool = False,
    compare: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    trust_code: bool = False,
    metric=None,
) -> PreparedRun:
    """Everything before the target: check the settings, resolve the artifact (an OUTDIR is exported
    here, once), build the inputs, run the reference model on them when their shape is known."""
    settings = settings or MeasureSettings()
    settings.validate()
    check_gate_options(percentile=percentile)
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {batch_size}")
    notes: list[str] = []
    artifact = resolve_artifact(artifact_path, device=profile.name, source=reference, trust_code=trust_code)
    if artifact.exported_now:
        notes.append(f"{artifact.path} was exported from the output directory for this run")

    if artifact.fixed_batch is not None and artifact.fixed_batch != batch_size:
        raise UserInputError(f"{artifact.path.name} has a fixed batch size of {artifact.fixed_batch}; use --batch-size "
                             f"{artifact.fixed_batch} or export it with a dynamic batch axis")
    request = _runtime_request(artifact, profile, providers)
    iterations = settings.iterations
    if percentile is not None:
        needed = min_samples_for_percentile(percentile, settings.confidence)
        if iterations < needed:
            notes.append(f"iterations raised from {iterations} to {needed}: bounding p{percentile:g} at "
                         f"{settings.confidence:.0%} confidence needs at least {needed} samples (MLPerf early stopping)")
            iterations = needed

    pool = build_inputs(artifact, data_spec, samples=settings.samples, seed=settings.seed, batch_size=batch_size)
    if pool.y is not None and artifact.output_width is not None:  # before the (possibly remote) run, not after
        from edgecomp.data.fit import check_labels

        check_labels(pool.y, artifact.output_width, data=data_spec, model=artifact.path.name)
    ref = (find_reference(artifact, reference, trust_code=trust_code)
           if (need_reference or compare or reference is not None) else None)

    reference_outputs = None
    if ref is not None and pool.x is not None:  # before the target run: a bad --reference fails fast
        reference_outputs, ref = _reference_outputs(ref, pool, explicit=reference is not None, notes=notes,
                                                    batch_size=batch_size)
    want_outputs = pool.has_labels or ref is not None or compare
    request.update(
        batch_size=batch_size,
        warmup_s=settings.warmup_s,
        iterations=iterations,
        min_duration_s=settings.min_duration_s,
        max_duration_s=settings.max_duration_s,
    )
    if pool.x is None:
        request["random"] = {"seed": settings.seed, "count": pool.count}
    return PreparedRun(profile=profile, artifact=artifact, pool=pool, request=request, settings=settings,
                       iterations=iterations, batch_size=batch_size, percentile=percentile, providers=providers,
                       explicit_reference=reference is not None, ref=ref, reference_outputs=reference_outputs,
                       want_outputs=want_outputs, compare=compare, atol=atol, rtol=rtol, trust_code=trust_code,
                       metric=metric, notes=notes)


def measure(
    artifact_path: str | Path,
    profile,
    *,
    target: str | None = None,
    data_spec: str | None = None,
    batch_size: int = 1,
    percentile: float | None = None,
    settings: MeasureSettings | None = None,
    providers: Sequence[str] | None = None,
    reference: ReferenceSpec | str | None = None,
    need_reference: bool = False,
    compare: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    target_options: TargetOptions | None = None,
    trust_code: bool = False,
    metric=None,
) -> Measurement:
    """Run one measurement and build its report (profile_artifact/verify call this). `trust_code` allows
    running the code an OUTDIR's recipe (or an ONNX file's metadata) names (runtime.reference).
    `metric(outputs, labels) -> float` (Python API; higher is better) replaces top-1 in the accuracy."""
    prepared = prepare_measurement(artifact_path, profile, data_spec=data_spec, batch_size=batch_size,
                                   percentile=percentile, settings=settings, providers=providers, reference=reference,
                                   need_reference=need_reference, compare=compare, atol=atol, rtol=rtol,
                                   trust_code=trust_code, metric=metric)
    return measure_prepared(prepared, target=target, target_options=target_options)


def measure_prepared(prepared: PreparedRun, *, target: str | None = None,
                     target_options: TargetOptions | None = None) -> Measurement:
    """The target's half of a measurement: run the agent there, then statistics, accuracy, agreement and
    comparison on the host. Safe to call from several threads on one `prepared` (nothing shared is mutated)."""
    p = prepared
    profile, artifact, settings, batch_size = p.profile, p.artifact, p.settings, p.batch_size
    notes = list(p.notes)
    request = dict(p.request)
    pool = copy.copy(p.pool)  # the agent's random inputs replace pool.x below: this run's copy only
    ref, reference_outputs = p.ref, p.reference_outputs

    transport, target_info = resolve_target(profile, target, target_options or TargetOptions())
    host_cores = os.cpu_count() or 1
    if target_info["stand_in"] and request.get("threads") and request["threads"] > host_cores:
        # The device's thread count on fewer host cores would time the oversubscription, not the model.
        notes.append(f"{profile.name} runs {request['threads']} threads; this stand-in host has {host_cores} "
                     f"cores, so it ran {host_cores}")
        request["threads"] = host_cores
    if target_info["stand_in"] and artifact.kind == "onnx" and artifact.precision == "int8":
        # Quantized for the device (full-range weights for a GPU, ARM or VNNI CPU): this host's x86 int8
        # kernels may saturate where the device's do not, so the stand-in computes it exactly.
        from edgecomp.exporters.cpu_features import EXACT_X86_INT8

        request["session_config"] = {EXACT_X86_INT8: "1"}
        notes.append(f"INT8 measured with ONNX Runtime's exact x86 int8 kernels ({EXACT_X86_INT8}=1), as the device "
                     "computes it; their latency is not the device's")
    with tempfile.TemporaryDirectory(prefix="edgecomp-run-") as scratch:
        scratch_path = Path(scratch)
        inputs_file = write_pool(pool, scratch_path / "inputs.npy")
        try:
            run = run_agent(transport, model=artifact.path, request=request, inputs=inputs_file,
                            want_outputs=p.want_outputs, scratch=scratch_path, timeout=settings.timeout_s)
        finally:
            transport.close()
    if pool.x is None and run.inputs is not None:
        pool.x = run.inputs
        pool.sample_shape = tuple(run.inputs.shape[1:])
    target_info["environment"] = run.result.get("environment", {})
    target_info["staged"] = run.staged

    runner = run.result["runner"]
    providers_used = runner.get("providers_used") or []
    gpu = artifact.runtime == "tensorrt" or any(x in GPU_PROVIDERS for x in providers_used)
    cv_threshold = settings.cv_threshold or default_cv_threshold(gpu)
    latency = summarize(
        run.times_ms,
        batch_size=batch_size,
        percentiles=() if p.percentile is None else (p.percentile,),
        confidence=settings.confidence,
        interval_level=settings.interval_level,
        cv_threshold=cv_threshold,
    )
    if run.result.get("stopped_by") == "max_duration":
        notes.append(f"the timed phase stopped at --max-duration after {latency.n} of {p.iterations} iterations")

    accuracy = (accuracy_report(run.outputs, pool.y, data=_data_name(pool), model=artifact.path.name, metric=p.metric)
                if (pool.has_labels and run.outputs is not None) else None)
    if ref is not None and reference_outputs is None and pool.x is not None:
        reference_outputs, ref = _reference_outputs(ref, pool, explicit=p.explicit_reference, notes=notes,
                                                    batch_size=batch_size)
    reference_info = agreement = None
    if ref is not None and reference_outputs is not None:
        reference_info = {"model": ref.describe(), "origin": ref.origin, "ran_on": "host (PyTorch)"}
        if pool.has_labels:
            reference_info["accuracy"] = accuracy_report(reference_outputs, pool.y, data=_data_name(pool),
                                                         model=f"the reference model {ref.describe()}",
                                                         metric=p.metric)
        if run.outputs is not None:
            agreement = agreement_report(run.outputs, reference_outputs, model=artifact.path.name,
                                         reference_name=f"the reference model {ref.describe()}")

    comparison = None
    if p.compare:
        comparison = compare_runtimes(artifact, run, pool, reference_outputs, ref, target_info, notes, p.atol, p.rtol,
                                      batch_size, trust_code=p.trust_code)

    report = ProfileReport(
        artifact=artifact.describe(),
        device=_device_info(profile),
        target=target_info,
        runtime={
            "name": runner.get("runtime"),
            "version": runner.get("version"),
            "providers_requested": runner.get("providers_requested"),
            "providers_used": providers_used,
            "providers_overridden": p.providers is not None,
            "threads": runner.get("threads"),
            "graph_optimization_level": runner.get("graph_optimization_level"),
            "session_config": runner.get("session_config") or {},
            "precision": artifact.precision or f"{profile.default_precision} (profile default; not read from the engine)",
            "input_name": runner.get("input_name"),
            "input_dtype": runner.get("input_dtype"),
            "timed_call": "one synchronous inference incl. host<->device copies, time.perf_counter_ns",
        },
        settings=dict(asdict(settings), batch_size=batch_size, iterations_requested=settings.iterations,
                      iterations=p.iterations, percentile=p.percentile, cv_threshold=cv_threshold),
        inputs=pool.describe(),
        latency=latency,
        timing={
            "warmup_iterations": run.result.get("warmup_iterations"),
            "warmup_s": run.result.get("warmup_ns", 0) / 1e9,
            "loop_s": run.result.get("loop_ns", 0) / 1e9,
            "stopped_by": run.result.get("stopped_by"),
            "wall_throughput_per_s": (latency.n * batch_size / (run.result["loop_ns"] / 1e9)
                                      if run.result.get("loop_ns") else None),
        },
        memory={
            "peak_rss_bytes": run.result.get("peak_rss_bytes"),
            "gpu_memory_used_bytes": run.result.get("gpu_memory_used_bytes"),
            "scope": "the agent process on the target (RSS peak over the whole run); GPU: device-wide in use",
        },
        accuracy=accuracy,
        reference=reference_info,
        agreement=agreement,
        compare=comparison,
        notes=notes + ([target_info["note"]] if target_info.get("note") else []),
    )
    return Measurement(report, artifact, pool, run.outputs, reference_outputs, ref)


def _reference_outputs(ref: ReferenceSpec, pool: InputPool, *, explicit: bool, notes: list[str], batch_size: int):
    """(outputs, ref) of the reference model on the pool; an implied reference that fails is dropped with a note."""
    from edgecomp.data.fit import runs_on

    try:
        with runs_on(pool.x.shape[1:], data=_data_name(pool), model=f"the reference model {ref.describe()}"):
            return run_reference(ref, pool.x, batch_size=max(batch_size, 64)), ref
    except EdgecompError as exc:
        if explicit:
            raise
        notes.append(f"reference model {ref.describe()} from {ref.origin} could not be run: {exc}")
        return None, None


def _data_name(pool: InputPool) -> str:
    return f"--data {pool.source[len('data:'):]}" if pool.source.startswith("data:") else "random inputs"


def _runtime_request(artifact: Artifact, profile, providers: Sequence[str] | None) -> dict[str, Any]:
    if artifact.runtime == "tensorrt":
        return {"runtime": "tensorrt"}
    eps = list(providers) if providers else list(profile.execution_providers)
    if not eps:
        raise UserInputError(f"device profile {profile.name!r} lists no ONNX Runtime execution providers; give a "
                             "TensorRT engine or pass --providers")
    return {
        "runtime": "onnxruntime",
        "providers": eps,
        "threads": profile.threads,
        "graph_optimization_level": profile.graph_optimization_level,
    }


def _device_info(profile) -> dict[str, Any]:
    return {
        "name": profile.name,
        "runtime": profile.runtime,
        "execution_providers": list(profile.execution_providers),
        "default_precision": profile.default_precision,
        "latency_budget_ms": profile.latency_budget_ms,
        "latency_percentile": profile.latency_percentile,
        "profile_file": None if profile.source is None else str(profile.source),
    }


# ---- public API -----------------------------------------------------------------------------

def profile_artifact(
    artifact_path: str | Path,
    profile,
    *,
    target: str | None = None,
    data_spec: str | None = None,
    batch_size: int = 1,
    percentile: float | None = None,
    settings: MeasureSettings | None = None,
    providers: Sequence[str] | None = None,
    reference: ReferenceSpec | str | None = None,
    compare: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    target_options: TargetOptions | None = None,
    trust_code: bool = False,
    metric=None,
) -> ProfileReport:
    """Measure ARTIFACT (.onnx/.ort/.engine or compress OUTDIR) on the profile's target without gating.

    `percentile` (e.g. 90) makes sure enough iterations run to bound that percentile. `reference`
    (a model spec) adds reference accuracy/agreement computed on the host; `compare` adds the
    cross-runtime output comparison.
    """
    return measure(artifact_path, profile, target=target, data_spec=data_spec, batch_size=batch_size,
                   percentile=percentile, settings=settings, providers=providers, reference=reference,
                   compare=compare, atol=atol, rtol=rtol, target_options=target_options, trust_code=trust_code,
                   metric=metric).report
