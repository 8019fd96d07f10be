"""--compare: the same inputs through PyTorch, the target's runtime and the host's runtimes.

Runs, in order (the first present is the reference side of every pair, see runtime.compare):
  pytorch     the artifact's own network: an OUTDIR's compressed model, else the reference model
  <runtime>@<target>   the outputs the target produced during the measurement
  onnxruntime-cpu@host ONNX Runtime's CPU provider here (unless that is what the target was)
  onnxruntime-tensorrt@host / tensorrt@host   where TensorRT is available on this host
"""

from __future__ import annotations

import numpy as np

from runtime.compare import CompareResult, compare_outputs
from runtime.remote import AgentRun


def compare_runtimes(artifact, run: AgentRun, pool, reference_outputs, ref, target_info, notes: list[str],
                     atol: float, rtol: float, batch_size: int) -> CompareResult | None:
    """Pairwise output differences of every runtime that can run the artifact (None if fewer than two)."""
    from runtime import agent
    from runtime.backends import open_onnxruntime, open_tensorrt, tensorrt_available

    if pool.x is None or run.outputs is None:
        notes.append("compare: no inputs/outputs came back; nothing compared")
        return None
    runs: dict[str, np.ndarray] = {}
    if artifact.outdir is not None:
        from edgecomp.factor import load_compressed
        from runtime.backends.torch_eager import TorchBackend

        backend = TorchBackend(load_compressed(artifact.outdir).module)
        runs["pytorch (compressed)"] = agent.run_all(backend.run, pool.x, max(batch_size, 64))
    elif reference_outputs is not None:
        runs[f"pytorch ({ref.spec})"] = reference_outputs
    else:
        notes.append("compare: no PyTorch model is known for this artifact (pass --reference)")
    target_label = f"{run.result['runner']['runtime']}@{target_info['url']}"
    runs[target_label] = run.outputs
    host_local = target_info["transport"] == "local"
    if artifact.runtime == "onnxruntime":
        import onnxruntime as ort

        used = run.result["runner"].get("providers_used") or []
        if not (host_local and used == ["CPUExecutionProvider"]):
            cpu = open_onnxruntime(artifact.path, ["CPUExecutionProvider"])
            runs["onnxruntime-cpu@host"] = agent.run_all(cpu.run, pool.x, batch_size, cpu.fixed_batch)
            cpu.close()
        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            notes.append("compare: TensorRT is not available to ONNX Runtime on this host; not compared")
        elif not (host_local and "TensorrtExecutionProvider" in used):
            trt = open_onnxruntime(artifact.path, ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
            runs["onnxruntime-tensorrt@host"] = agent.run_all(trt.run, pool.x, batch_size, trt.fixed_batch)
            trt.close()
    elif not host_local:
        ok, why = tensorrt_available()
        if ok:
            engine = open_tensorrt(artifact.path)
            runs["tensorrt@host"] = agent.run_all(engine.run, pool.x, batch_size, engine.fixed_batch)
            engine.close()
        else:
            notes.append(f"compare: {why}")
    if len(runs) < 2:
        notes.append("compare: fewer than two runs available; nothing compared")
        return None
    return compare_outputs(runs, atol=atol, rtol=rtol)
