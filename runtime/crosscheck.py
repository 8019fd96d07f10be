"""--compare: the same inputs through PyTorch, the target's runtime and the host's runtimes.

Runs, in order (the first present is the reference side of every pair, see runtime.compare):
  pytorch     the artifact's own network: an OUTDIR's compressed model (rebuilt only as
              edgecomp.factor.recipe allows: zoo spec, the caller's --reference, or trust_code),
              else the reference model
  <runtime>@<target>   the outputs the target produced during the measurement
  onnxruntime-cpu@host ONNX Runtime's CPU provider here (unless that is what the target was)
  onnxruntime-tensorrt@host / tensorrt@host   where TensorRT is available on this host
"""

from __future__ import annotations

import numpy as np

from edgecomp.runtime.compare import CompareResult, compare_outputs
from edgecomp.runtime.remote import AgentRun


def compare_runtimes(artifact, run: AgentRun, pool, reference_outputs, ref, target_info, notes: list[str],
                     atol: float, rtol: float, batch_size: int, trust_code: bool = False) -> CompareResult | None:
    """Pairwise output differences of every runtime that can run the artifact (None if fewer than two)."""
    from edgecomp.runtime import agent
    from edgecomp.runtime.backends import open_onnxruntime, open_tensorrt, tensorrt_available

    if pool.x is None or run.outputs is None:
        notes.append("compare: no inputs/outputs came back; nothing compared")
        return None
    runs: dict[str, np.ndarray] = {}
    if artifact.outdir is not None:
        compressed = _compressed_module(artifact.outdir, ref, trust_code, notes)
        if compressed is not None:
            from edgecomp.runtime.backends.torch_eager import TorchBackend

            from edgecomp.imports import call_user_code

            backend = TorchBackend(compressed)
            runs["pytorch (compressed)"] = call_user_code(  # the forward is user code (sys.exit() included)
                lambda: agent.run_all(backend.run, pool.x, max(batch_size, 64)), "running the compressed PyTorch model")
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


def _compressed_module(outdir, ref, trust_code: bool, notes: list[str]):
    """The OUTDIR's compressed nn.Module, or None (with a note) when rebuilding it would run code nobody allowed."""
    from edgecomp.errors import UserInputError
    from edgecomp.factor import load_compressed

    named = ref if ref is not None and ref.trusted and ref.origin == "--reference" else None
    try:
        return load_compressed(outdir, model_spec=named.spec if named else None, trust_code=trust_code,
                               trust_pickle=named.trust_pickle if named else False,
                               allow_hint="--reference SPEC (the model's source spec) or --trust-code").module
    except UserInputError as exc:
        notes.append(f"compare: the compressed PyTorch model was not rebuilt: {exc}")
        return None
