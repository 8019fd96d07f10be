"""The agent's timing loop and runners, and the in-process backends (ONNX Runtime, PyTorch, TensorRT)."""

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgecomp.errors import MissingDependencyError, UserInputError
from edgecomp.runtime import agent
from edgecomp.runtime.backends import TorchBackend, open_onnxruntime, open_tensorrt, tensorrt_available
from edgecomp.runtime.errors import TargetDependencyError

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)
B = RNG.normal(size=(3,)).astype(np.float32)


def linear_onnx(path, batch="batch"):
    """y = x @ W + b with a symbolic (or fixed) batch axis."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear", [x], [y], [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class FakeClock:
    """Each call advances time by `step` ns: a deterministic perf_counter_ns."""

    def __init__(self, step):
        self.t, self.step = 0, step

    def __call__(self):
        self.t += self.step
        return self.t


# ---- timing loop ----------------------------------------------------------------------------

def test_timed_loop_stops_at_iterations_when_duration_is_reached_first():
    calls = []
    out = agent.timed_loop(calls.append, [1, 2, 3], warmup_s=0, iterations=7, min_duration_s=0,
                           clock=FakeClock(1000))
    assert len(out["times_ns"]) == 7 and out["stopped_by"] == "iterations"
    assert out["warmup_iterations"] == 0
    assert calls == [1, 2, 3, 1, 2, 3, 1]  # cycles through the batches
    assert all(t == 1000 for t in out["times_ns"])  # one clock pair around each call


def test_timed_loop_runs_until_min_duration_when_that_is_later():
    clock = FakeClock(1_000_000)  # each clock() call = 1 ms; an iteration spans 2 calls
    out = agent.timed_loop(lambda x: None, [0], warmup_s=0, iterations=3, min_duration_s=0.1, clock=clock)
    assert out["stopped_by"] == "min_duration"
    assert len(out["times_ns"]) > 3
    # stops at the first iteration ending at or after 100 ms of timed phase
    assert 49 <= len(out["times_ns"]) <= 51


def test_timed_loop_warms_up_by_time_and_respects_max_duration():
    clock = FakeClock(1_000_000)
    out = agent.timed_loop(lambda x: None, [0], warmup_s=0.01, iterations=10_000, min_duration_s=0,
                           max_duration_s=0.02, clock=clock)
    assert out["warmup_iterations"] >= 4
    assert out["stopped_by"] == "max_duration"
    assert len(out["times_ns"]) < 10_000


@pytest.mark.parametrize("kwargs", [dict(iterations=0), dict(iterations=1, warmup_s=-1)])
def test_timed_loop_rejects_bad_settings(kwargs):
    kwargs.setdefault("warmup_s", 0)
    with pytest.raises(agent.AgentError):
        agent.timed_loop(lambda x: None, [0], **kwargs)


def test_make_batches_and_run_all():
    pool = np.arange(10, dtype=np.float32).reshape(10, 1)
    batches = agent.make_batches(pool, 4)
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # full batches only
    tiny = agent.make_batches(pool[:2], 5)
    assert tiny[0].shape == (5, 1)  # tiled up to one batch
    with pytest.raises(agent.AgentError, match="fixed batch size of 2"):
        agent.make_batches(pool, 4, fixed_batch=2)
    seen = []

    def run(x):
        seen.append(x.shape[0])
        return x * 2

    out = agent.run_all(run, pool, 4, fixed_batch=4)
    assert seen == [4, 4, 4]  # the short last batch was padded to the fixed batch
    np.testing.assert_array_equal(out, pool * 2)


# ---- ONNX Runtime -----------------------------------------------------------------------------

def test_onnxruntime_backend_runs_and_records_what_it_used(tmp_path):
    path = linear_onnx(tmp_path / "m.onnx")
    backend = open_onnxruntime(path, ["CPUExecutionProvider"], threads=1, graph_optimization_level="basic")
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(backend.run(x), x @ W + B, rtol=1e-5, atol=1e-6)
    info = backend.info()
    assert info["runtime"] == "onnxruntime" and info["version"] == ort.__version__
    assert info["providers_used"] == ["CPUExecutionProvider"]
    assert info["threads"] == 1 and info["graph_optimization_level"] == "basic"
    assert info["input_shape"] == [None, 4] and backend.fixed_batch is None
    backend.close()


def test_missing_execution_provider_is_an_error_not_a_cpu_fallback(tmp_path):
    path = linear_onnx(tmp_path / "m.onnx")
    missing = "CUDAExecutionProvider"
    if missing in ort.get_available_providers():  # pragma: no cover - GPU build of onnxruntime
        missing = "NnapiExecutionProvider"
    with pytest.raises(TargetDependencyError) as info:
        open_onnxruntime(path, [missing, "CPUExecutionProvider"])
    message = str(info.value)
    assert missing in message and "CPUExecutionProvider" in message and "--providers" in message


def test_unknown_graph_optimization_level_and_corrupt_model(tmp_path):
    path = linear_onnx(tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match="graph_optimization_level"):
        open_onnxruntime(path, graph_optimization_level="max")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(UserInputError, match="cannot load"):
        open_onnxruntime(bad)


def test_agent_execute_end_to_end_in_process(tmp_path):
    path = linear_onnx(tmp_path / "m.onnx", batch=2)  # fixed batch 2
    pool = RNG.random((5, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", pool)
    request = {"runtime": "onnxruntime", "model": str(path), "providers": ["CPUExecutionProvider"],
               "inputs": str(tmp_path / "x.npy"), "outputs": str(tmp_path / "out.npz"), "batch_size": 2,
               "warmup_s": 0.0, "iterations": 20, "min_duration_s": 0.0}
    result = agent.execute(request)
    assert result["ok"] and len(result["times_ns"]) == 20 and result["pool_size"] == 5
    assert result["peak_rss_bytes"] > 0
    with np.load(tmp_path / "out.npz") as data:
        np.testing.assert_allclose(data["y"], pool @ W + B, rtol=1e-5, atol=1e-6)
        assert "x" not in data.files  # the host sent the inputs


def test_agent_random_inputs_come_back_with_outputs(tmp_path):
    path = linear_onnx(tmp_path / "m.onnx")
    request = {"runtime": "onnxruntime", "model": str(path), "random": {"seed": 3, "count": 6},
               "outputs": str(tmp_path / "out.npz"), "warmup_s": 0.0, "iterations": 3, "min_duration_s": 0.0}
    agent.execute(request)
    with np.load(tmp_path / "out.npz") as data:
        np.testing.assert_allclose(data["y"], data["x"] @ W + B, rtol=1e-5, atol=1e-6)
        assert data["x"].shape == (6, 4)


def test_agent_rejects_inputs_of_the_wrong_shape(tmp_path):
    path = linear_onnx(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(agent.AgentError, match="sample shape"):
        agent.execute({"runtime": "onnxruntime", "model": str(path), "inputs": str(tmp_path / "x.npy"),
                       "warmup_s": 0, "iterations": 1})


def test_agent_main_prints_one_marked_json_line(tmp_path, capsys):
    request = {"runtime": "nope", "model": "x"}
    code = agent.main(["--request", agent.encode_request(request)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == agent.EXIT_ERROR and len(out) == 1 and out[0].startswith(agent.RESULT_MARKER)
    assert '"ok": false' in out[0]
    assert agent.main(["garbage"]) == agent.EXIT_ERROR


def test_agent_file_imports_nothing_outside_the_standard_library():
    # the file is copied alone to boards without edgecomp: only stdlib at module level
    import ast
    from pathlib import Path

    tree = ast.parse(Path(agent.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert "os" in names and "json" in names
    assert names <= set(sys.stdlib_module_names) | {"__future__"}


# ---- PyTorch reference ----------------------------------------------------------------------

def test_torch_backend_matches_module():
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    backend = TorchBackend(module, device="cpu")
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(backend.run(x), expected, rtol=1e-6)
    assert backend.info()["runtime"] == "pytorch" and backend.gpu_memory_bytes() is None


# ---- TensorRT -------------------------------------------------------------------------------

@pytest.mark.parametrize("absent", ["tensorrt", "cuda.bindings.runtime"])
def test_tensorrt_missing_names_the_install_command(tmp_path, monkeypatch, absent):
    """Either package missing (None in sys.modules makes its import fail, also where it is installed)."""
    import sys

    monkeypatch.setitem(sys.modules, absent, None)
    if absent != "tensorrt":
        monkeypatch.setitem(sys.modules, "cuda.cudart", None)  # cuda-python's older layout too
    ok, why = tensorrt_available()
    assert not ok and 'pip install "edgecomp[tensorrt]"' in why
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(MissingDependencyError, match=r'pip install "edgecomp\[tensorrt\]"'):
        open_tensorrt(engine)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f"TensorRT engine test needs tensorrt, cuda-python and a CUDA GPU: {why}")
    import tensorrt as trt

    path = linear_onnx(tmp_path / "m.onnx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(path.read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4), (4, 4), (8, 4))
    config.add_optimization_profile(profile)
    engine_path = tmp_path / "m.engine"
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))
    backend = open_tensorrt(engine_path)
    x = RNG.normal(size=(4, 4)).astype(np.float32)
    np.testing.assert_allclose(backend.run(x), x @ W + B, rtol=1e-3, atol=1e-3)
    info = backend.info()
    assert info["runtime"] == "tensorrt" and info["version"] == trt.__version__
    backend.close()
