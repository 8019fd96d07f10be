"""edgecomp on-device measurement agent: ONE self-contained file.

The host copies this file, the model and the inputs to the target and runs

    python3 agent.py --request BASE64_JSON

It needs only Python >= 3.8, numpy and the runtime that runs the model (onnxruntime, or tensorrt
with cuda-python) on the target -- never edgecomp itself -- so it imports nothing outside the
standard library at module level. The host also imports it as a library (the timing loop and the
runners are shared, so local and remote measurements run the very same code).

What it does, in order: open the model (ONNX Runtime session with the requested execution
providers, or a TensorRT engine), optionally run every input once and save the outputs (accuracy /
agreement), warm up for `warmup_s` seconds, then time inferences one at a time with
time.perf_counter_ns until BOTH `iterations` runs and `min_duration_s` seconds are done (or
`max_duration_s` is reached). It prints one line `EDGECOMP_AGENT_RESULT {json}` on stdout with the
raw times in nanoseconds; failures print the same line with {"ok": false, "error": {...}}.

Timed work per iteration: the runtime call including host<->device copies (end-to-end latency).
"""

from __future__ import annotations

import base64
import json
import os
import platform
import sys
import time

RESULT_MARKER = "EDGECOMP_AGENT_RESULT "
AGENT_VERSION = 1

# Exit codes of the agent process. The host decides from the result line first (edgecomp.runtime.remote);
# the status matters only when that line is missing. This file cannot import edgecomp.exit_codes (it
# runs without edgecomp), so it has its own codes, chosen to clash with nothing the host may see instead:
# not edgecomp's 1 (budget exceeded) or 3 (inconclusive), not Python's own 1 (uncaught exception) or
# 2 (cannot open the script), not the shell's 126/127, signals' 128+n or ssh's 255. The host turns an
# agent failure into a TargetError (edgecomp exit 2: could not run).
EXIT_OK = 0
EXIT_ERROR = 4  # the agent ran and reported {"ok": false, "error": ...} on its result line

GRAPH_OPT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

# pip package that provides each ONNX Runtime execution provider (hint for missing-EP errors).
PROVIDER_PACKAGES = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu (with TensorRT libraries on the library path)",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "DmlExecutionProvider": "onnxruntime-directml",
    "QNNExecutionProvider": "onnxruntime-qnn",
    "CoreMLExecutionProvider": "onnxruntime (macOS/iOS builds include CoreML)",
    "NnapiExecutionProvider": "an Android build of onnxruntime (onnxruntime-android)",
    "XnnpackExecutionProvider": "an onnxruntime build with --use_xnnpack (mobile packages include it)",
}

PIP_NAMES = {"numpy": "numpy", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "cuda": "cuda-python"}


class AgentError(Exception):
    """A failure the host turns into a clear message. kind: missing_module | missing_provider |
    bad_model | bad_input | bad_request | runtime_error."""

    def __init__(self, kind: str, message: str, **details):
        super().__init__(message)
        self.kind = kind
        self.details = details

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": str(self), **self.details}


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise AgentError(
            "missing_module",
            "%s not importable on target (%s): pip install %s there" % (top, sys.executable, PIP_NAMES.get(top, top)),
            modules=[top],
            python=sys.executable,
            detail=str(exc),
        ) from None


# ---- resource usage -------------------------------------------------------------------------

def peak_rss_bytes():
    """Peak resident set size of this process.

    Linux/Android: VmHWM from /proc/self/status, which belongs to the address space created at exec.
    getrusage's ru_maxrss survives execve, so a child forked from a large parent (the host's Python
    with torch loaded) would report the parent's size; it is only the fallback (KiB on Linux,
    bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _cudart():
    """cuda-python's runtime bindings (new and old module layouts), or None."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python
        return cudart
    except ImportError:
        return None


def gpu_memory_used_bytes():
    """Device memory in use on the current CUDA device (total - free), or None without CUDA/cuda-python."""
    cudart = _cudart()
    if cudart is None:
        return None
    try:
        err, free, total = cudart.cudaMemGetInfo()
    except Exception:
        return None
    if int(err) != 0:
        return None
    return int(total - free)


# ---- the timing loop ------------------------------------------------------------------------

def timed_loop(run, batches, *, warmup_s, iterations, min_duration_s=0.0, max_duration_s=None,
               clock=time.perf_counter_ns):
    """Warm up by time, then time `run(batch)` once per inference.

    Warm-up: call `run` on successive batches until `warmup_s` seconds have elapsed (none if 0).
    Timed phase: one clock() pair around each call; stop when at least `iterations` calls AND
    `min_duration_s` seconds of timed phase are done (whichever is later), or as soon as
    `max_duration_s` seconds have elapsed (then fewer samples may come back: stopped_by says so).
    Returns dict(times_ns, warmup_iterations, warmup_ns, loop_ns, stopped_by).
    """
    if iterations < 1:
        raise AgentError("bad_request", "iterations must be >= 1, got %r" % (iterations,))
    if warmup_s < 0 or min_duration_s < 0:
        raise AgentError("bad_request", "warmup_s and min_duration_s must be >= 0")
    k = len(batches)
    if k == 0:
        raise AgentError("bad_input", "no input batches to run")
    warm_ns = int(warmup_s * 1e9)
    w = 0
    w_start = clock()
    while clock() - w_start < warm_ns:
        run(batches[w % k])
        w += 1
    warm_elapsed = clock() - w_start

    min_ns = int(min_duration_s * 1e9)
    max_ns = None if max_duration_s is None else int(max_duration_s * 1e9)
    times = []
    append = times.append
    i = 0
    start = clock()
    stopped_by = "iterations"
    while True:
        x = batches[i % k]
        t0 = clock()
        run(x)
        t1 = clock()
        append(t1 - t0)
        i += 1
        elapsed = t1 - start
        if i >= iterations and elapsed >= min_ns:
            # whichever condition was met later decided the stop
            stopped_by = "iterations" if i == iterations else "min_duration"
            break
        if max_ns is not None and elapsed >= max_ns:
            stopped_by = "max_duration"
            break
    return {
        "times_ns": times,
        "warmup_iterations": w,
        "warmup_ns": int(warm_elapsed),
        "loop_ns": int(clock() - start),
        "stopped_by": stopped_by,
    }


def make_batches(pool, batch_size, fixed_batch=None):
    """Split an input pool (N, ...) into contiguous batches of `batch_size` for the timing loop.

    Only full batches are used for timing (a partial last batch would time a different shape); a
    pool smaller than one batch is tiled up to one batch.
    """
    np = _import("numpy")
    if fixed_batch is not None and batch_size != fixed_batch:
        raise AgentError(
            "bad_input",
            "the model has a fixed batch size of %d but batch size %d was requested "
            "(export with a dynamic batch axis or use --batch-size %d)" % (fixed_batch, batch_size, fixed_batch),
        )
    n = pool.shape[0]
    if n < batch_size:
        reps = -(-batch_size // n)
        pool = np.concatenate([pool] * reps, axis=0)[:batch_size]
        n = batch_size
    return [np.ascontiguousarray(pool[s:s + batch_size]) for s in range(0, n - batch_size + 1, batch_size)]


def run_all(run, pool, batch_size, fixed_batch=None):
    """Outputs for every sample of the pool, in order (a short last batch is padded when the batch is fixed)."""
    np = _import("numpy")
    outs = []
    n = pool.shape[0]
    for s in range(0, n, batch_size):
        x = pool[s:s + batch_size]
        m = x.shape[0]
        if fixed_batch is not None and m < fixed_batch:
            pad = np.zeros((fixed_batch - m,) + x.shape[1:], dtype=x.dtype)
            x = np.concatenate([x, pad], axis=0)
        y = np.asarray(run(np.ascontiguousarray(x)))
        outs.append(np.array(y[:m], copy=True))
    return np.concatenate(outs, axis=0)


# ---- ONNX Runtime ---------------------------------------------------------------------------

class OrtRunner:
    """An onnxruntime InferenceSession on exactly the requested execution providers.

    A provider missing from onnxruntime.get_available_providers() is an error, never a silent CPU
    fallback; `providers_used` is what the session reports it actually uses.
    """

    runtime = "onnxruntime"

    def __init__(self, model_path, providers, threads=None, graph_optimization_level="all", log_severity=3,
                 session_config=None):
        ort = _import("onnxruntime")
        _import("numpy")
        self.version = ort.__version__
        providers = list(providers or ["CPUExecutionProvider"])
        available = list(ort.get_available_providers())
        missing = [p for p in providers if p not in available]
        if missing:
            hints = "; ".join("%s comes with %s" % (p, PROVIDER_PACKAGES[p]) for p in missing if p in PROVIDER_PACKAGES)
            raise AgentError(
                "missing_provider",
                "execution provider(s) %s not available in onnxruntime %s on %s (available: %s)%s"
                % (", ".join(missing), ort.__version__, platform.node() or "this machine", ", ".join(available),
                   (". " + hints) if hints else ""),
                missing=missing,
                available=available,
            )
        if graph_optimization_level not in GRAPH_OPT_LEVELS:
            raise AgentError("bad_request", "graph_optimization_level must be one of %s" % sorted(GRAPH_OPT_LEVELS))
        options = ort.SessionOptions()
        options.log_severity_level = int(log_severity)
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[graph_optimization_level])
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self.session_config = dict(session_config or {})
        for key, value in self.session_config.items():
            options.add_session_config_entry(str(key), str(value))
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            raise AgentError("bad_model", "onnxruntime cannot load %s: %s" % (os.path.basename(str(model_path)), exc))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise AgentError("bad_model", "the model has %d inputs; edgecomp measures single-input models" % len(inputs))
        self.input_name = inputs[0].name
        self.input_shape = [d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape]
        self.input_dtype = _ORT_TYPES.get(inputs[0].type, "float32")
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = self.input_shape[0] if self.input_shape else None
        self.fixed_batch = first
        self.providers_requested = providers
        self.providers_used = list(self.session.get_providers())
        self.threads = threads
        self.graph_optimization_level = graph_optimization_level
        self._run = self.session.run
        self._first = self.output_names[:1]

    def run(self, x):
        return self._run(self._first, {self.input_name: x})[0]

    def info(self):
        return {
            "runtime": self.runtime,
            "version": self.version,
            "providers_requested": self.providers_requested,
            "providers_used": self.providers_used,
            "threads": self.threads,
            "graph_optimization_level": self.graph_optimization_level,
            "session_config": self.session_config,
            "input_name": self.input_name,
            "input_shape": self.input_shape,
            "input_dtype": self.input_dtype,
            "output_names": self.output_names,
        }

    def close(self):
        self.session = None


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


# ---- TensorRT -------------------------------------------------------------------------------

class TrtRunner:
    """A serialized TensorRT engine run with the TensorRT 10 API (set_input_shape /
    set_tensor_address / execute_async_v3) and CUDA memory from cuda-python."""

    runtime = "tensorrt"

    def __init__(self, engine_path, log_severity=3):
        self.trt = trt = _import("tensorrt")
        np = _import("numpy")
        cudart = _cudart()
        if cudart is None:
            _import("cuda")  # raises missing_module naming cuda-python
            raise AgentError("missing_module", "cuda-python runtime bindings not importable on target: "
                             "pip install cuda-python there", modules=["cuda"])
        self.cudart = cudart
        self.version = trt.__version__
        severity = [trt.Logger.VERBOSE, trt.Logger.INFO, trt.Logger.WARNING, trt.Logger.ERROR][min(max(int(log_severity), 0), 3)]
        self.logger = trt.Logger(severity)
        runtime = trt.Runtime(self.logger)
        with open(engine_path, "rb") as f:
            blob = f.read()
        self.engine = runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise AgentError("bad_model", "TensorRT cannot deserialize %s (built for another TensorRT version or GPU?)"
                             % os.path.basename(str(engine_path)))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise AgentError("runtime_error", "TensorRT could not create an execution context")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise AgentError("bad_model", "the engine has %d inputs and %d outputs; edgecomp measures single-input models"
                             % (len(self.inputs), len(self.outputs)))
        self.input_name = self.inputs[0]
        shape = list(self.engine.get_tensor_shape(self.input_name))
        self.input_shape = [d if d > 0 else None for d in shape]
        self.fixed_batch = self.input_shape[0] if self.input_shape else None
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.input_dtype = str(self.dtypes[self.input_name])
        self.stream = self._check(cudart.cudaStreamCreate())
        self.buffers = {}      # name -> (device pointer, capacity in bytes)
        self.host_out = {}
        self._shape = None
        self.np = np

    def _check(self, result):
        """cuda-python calls return (err, *values): raise on err, return the value(s)."""
        err = result[0]
        if int(err) != 0:
            raise AgentError("runtime_error", "CUDA call failed: %s" % (err,))
        if len(result) == 1:
            return None
        return result[1] if len(result) == 2 else result[1:]

    def _buffer(self, name, nbytes):
        ptr, cap = self.buffers.get(name, (None, 0))
        if cap < nbytes:
            if ptr is not None:
                self._check(self.cudart.cudaFree(ptr))
            ptr = self._check(self.cudart.cudaMalloc(max(nbytes, 1)))
            self.buffers[name] = (ptr, nbytes)
            self.context.set_tensor_address(name, int(ptr))
        return ptr

    def _set_shape(self, shape):
        if shape == self._shape:
            return
        if not self.context.set_input_shape(self.input_name, tuple(shape)):
            raise AgentError("bad_input", "the engine does not accept input shape %s (engine input %s)"
                             % (tuple(shape), self.input_shape))
        self._buffer(self.input_name, int(self.np.prod(shape)) * self.dtypes[self.input_name].itemsize)
        for name in self.outputs:
            oshape = tuple(self.context.get_tensor_shape(name))
            self._buffer(name, int(self.np.prod(oshape)) * self.dtypes[name].itemsize)
            self.host_out[name] = self.np.empty(oshape, dtype=self.dtypes[name])
        self._shape = shape

    def run(self, x):
        cudart = self.cudart
        x = self.np.ascontiguousarray(x, dtype=self.dtypes[self.input_name])
        self._set_shape(tuple(x.shape))
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(cudart.cudaMemcpyAsync(self.buffers[self.input_name][0], x.ctypes.data, x.nbytes, h2d,
                                           self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise AgentError("runtime_error", "TensorRT execute_async_v3 failed")
        first = self.outputs[0]
        out = self.host_out[first]
        self._check(cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[first][0], out.nbytes, d2h, self.stream))
        self._check(cudart.cudaStreamSynchronize(self.stream))
        return out

    def info(self):
        return {
            "runtime": self.runtime,
            "version": self.version,
            "providers_requested": ["TensorRT"],
            "providers_used": ["TensorRT"],
            "input_name": self.input_name,
            "input_shape": self.input_shape,
            "input_dtype": self.input_dtype,
            "output_names": self.outputs,
        }

    def close(self):
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers = {}
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


def open_runner(request):
    """The runner for request['runtime'] ('onnxruntime' | 'tensorrt')."""
    runtime = request.get("runtime")
    if runtime == "onnxruntime":
        return OrtRunner(
            request["model"],
            request.get("providers") or ["CPUExecutionProvider"],
            threads=request.get("threads"),
            graph_optimization_level=request.get("graph_optimization_level", "all"),
            session_config=request.get("session_config"),
        )
    if runtime == "tensorrt":
        return TrtRunner(request["model"])
    raise AgentError("bad_request", "unknown runtime %r (expected onnxruntime or tensorrt)" % (runtime,))


# ---- inputs ---------------------------------------------------------------------------------

def load_pool(request, runner):
    """The input pool (N, ...): from the npz the host sent, or seeded uniform [0, 1) of the model's shape."""
    np = _import("numpy")
    dtype = np.dtype(runner.input_dtype)
    if request.get("inputs"):
        loaded = np.load(request["inputs"], allow_pickle=False)
        if hasattr(loaded, "files"):  # .npz: array 'x'
            with loaded:
                if "x" not in loaded.files:
                    raise AgentError("bad_input", "inputs file has no array 'x'")
                pool = loaded["x"]
        else:
            pool = loaded
        if pool.ndim < 1 or pool.shape[0] == 0:
            raise AgentError("bad_input", "the input pool is empty")
    else:
        spec = request.get("random") or {}
        sample_shape = spec.get("sample_shape") or runner.input_shape[1:]
        if not sample_shape or any(d is None for d in sample_shape):
            raise AgentError("bad_input", "the model's input shape %s has dynamic dimensions besides the batch; "
                             "give real inputs (--data)" % (runner.input_shape,))
        rng = np.random.default_rng(int(spec.get("seed", 0)))
        pool = rng.random((int(spec.get("count", 32)),) + tuple(int(d) for d in sample_shape), dtype=np.float32)
    expected = runner.input_shape[1:]
    got = list(pool.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise AgentError("bad_input", "inputs have sample shape %s but the model expects %s"
                         % (tuple(got), tuple("?" if e is None else e for e in expected)))
    return np.ascontiguousarray(pool.astype(dtype, copy=False))


# ---- one measurement ------------------------------------------------------------------------

def cpu_flags(path="/proc/cpuinfo"):
    """The first processor's flags ('flags' on x86, 'Features' on ARM), sorted; None without /proc/cpuinfo.

    The host picks INT8 weight ranges from them (exporters.cpu_features parses the same way)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() in ("flags", "features"):
                    return sorted(set(value.lower().split()))
    except OSError:
        return None
    return []


def environment():
    return {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "node": platform.node(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "agent_version": AGENT_VERSION,
    }


REQUIRED_MODULES = {"onnxruntime": ("onnxruntime", "numpy"), "tensorrt": ("tensorrt", "numpy", "cuda")}


def check_modules(runtime):
    """Import everything the runtime needs up front and name ALL that are missing in one error."""
    import importlib

    missing, details = [], []
    for module in REQUIRED_MODULES.get(runtime, ("numpy",)):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing.append(module)
            details.append("%s: %s" % (module, exc))
    if missing:
        raise AgentError(
            "missing_module",
            "; ".join("%s not importable on target (%s): pip install %s there" % (m, sys.executable, PIP_NAMES.get(m, m))
                      for m in missing),
            modules=missing,
            python=sys.executable,
            detail=" | ".join(details),
        )


def execute(request):
    """Run one measurement request (dict) and return the result dict (raises AgentError).

    {"action": "environment"} only describes the target (python, machine, CPU flags, runtimes)."""
    if request.get("action") == "environment":
        return {"ok": True, "environment": environment()}
    check_modules(request.get("runtime"))
    np = _import("numpy")
    runner = open_runner(request)
    try:
        pool = load_pool(request, runner)
        batch_size = int(request.get("batch_size", 1))
        if batch_size < 1:
            raise AgentError("bad_request", "batch_size must be >= 1")
        result = {"ok": True, "runner": runner.info(), "environment": environment(), "pool_size": int(pool.shape[0])}
        batches = make_batches(pool, batch_size, runner.fixed_batch)  # also rejects a batch the model cannot take
        out_path = request.get("outputs")
        if out_path:
            out_dir = os.path.dirname(out_path)
            if out_dir:
                os.makedirs(out_dir, exist_ok=True)
            outputs = run_all(runner.run, pool, batch_size, runner.fixed_batch)
            arrays = {"y": outputs}
            if not request.get("inputs"):
                arrays["x"] = pool  # random inputs made here: the host needs them for agreement checks
            tmp = out_path + ".tmp.npz"
            np.savez(tmp, **arrays)
            os.replace(tmp, out_path)
            result["outputs"] = out_path
        timing = timed_loop(
            runner.run,
            batches,
            warmup_s=float(request.get("warmup_s", 1.0)),
            iterations=int(request.get("iterations", 100)),
            min_duration_s=float(request.get("min_duration_s", 0.0)),
            max_duration_s=request.get("max_duration_s"),
        )
        result.update(timing)
        result["batch_size"] = batch_size
        result["peak_rss_bytes"] = peak_rss_bytes()
        result["gpu_memory_used_bytes"] = gpu_memory_used_bytes()
        return result
    finally:
        runner.close()


def encode_request(request):
    return base64.urlsafe_b64encode(json.dumps(request).encode("utf-8")).decode("ascii")


def decode_request(text):
    try:
        return json.loads(base64.urlsafe_b64decode(text.encode("ascii")).decode("utf-8"))
    except Exception as exc:
        raise AgentError("bad_request", "cannot decode the request: %s" % exc)


def _emit(obj):
    sys.stdout.write(RESULT_MARKER + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) != 2 or argv[0] != "--request":
            raise AgentError("bad_request", "usage: agent.py --request BASE64_JSON")
        request = decode_request(argv[1])
        if request.get("chdir"):
            os.chdir(request["chdir"])
        result = execute(request)
    except AgentError as exc:
        _emit({"ok": False, "error": exc.to_dict(), "environment": environment()})
        return EXIT_ERROR
    except Exception as exc:  # report anything else instead of a bare traceback the host cannot parse
        _emit({"ok": False, "error": {"kind": "runtime_error", "message": "%s: %s" % (type(exc).__name__, exc)},
               "environment": environment()})
        return EXIT_ERROR
    _emit(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
