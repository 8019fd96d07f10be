"""The reference model (the uncompressed original) and the reference accuracy the gates compare with.

Reference model, first that applies:
  1. --reference MODEL_SPEC [--reference-weights W]
  2. an OUTDIR's recipe.json source (spec + weights)
  3. the ONNX metadata edgecomp.source_model / edgecomp.weights
It runs on the host with PyTorch, on the very inputs the target ran, so accuracy drop and
agreement are paired comparisons (the same samples on both sides). A spec that a file names (2, 3)
may come from someone else: it is run only when it is a zoo spec or the caller passed trust_code
(--trust-code), and never with pickle trusted; otherwise the reference is skipped with a note.

Reference accuracy, first that applies: an explicit number; the reference model run on the same
samples; the OUTDIR's report.json `original_accuracy` (measured by `compress` on its own
evaluation set, so unpaired: the report says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecomp.errors import UserInputError
from edgecomp.runtime.artifacts import Artifact


@dataclass(frozen=True)
class ReferenceSpec:
    spec: str
    weights: str | None = None
    trust_pickle: bool = False
    origin: str = "--reference"
    trusted: bool = True  # the caller named it (its code may run); False for a spec a file names
    module: Any = None  # an in-memory nn.Module (the Python API's edgecomp.export): used as is, `spec` labels it

    def describe(self) -> str:
        return self.spec + (f" (weights {self.weights})" if self.weights else "")


def find_reference(artifact: Artifact, explicit: ReferenceSpec | str | None = None, *,
                   trust_code: bool = False) -> ReferenceSpec | None:
    """The reference model to run, or None when nothing names one. One that a file names is trusted
    (its code may run) only with `trust_code`; its pickles never are."""
    if isinstance(explicit, str):
        return ReferenceSpec(explicit)
    if explicit is not None:
        return explicit
    if artifact.outdir is not None:
        from edgecomp.factor.recipe import read_recipe

        source = read_recipe(artifact.outdir).get("source") or {}
        if isinstance(source.get("spec"), str) and source["spec"].strip():
            weights = source.get("weights")
            return ReferenceSpec(source["spec"].strip(), weights if isinstance(weights, str) else None,
                                 origin="recipe.json", trusted=trust_code)
    spec = artifact.metadata.get("edgecomp.source_model")
    if spec:
        weights = artifact.metadata.get("edgecomp.weights")
        if weights and not Path(weights).expanduser().exists():
            beside = artifact.path.parent / weights
            weights = str(beside) if beside.exists() else weights
        return ReferenceSpec(spec, weights or None, origin="ONNX metadata", trusted=trust_code)
    return None


def load_reference(ref: ReferenceSpec):
    """Build the reference nn.Module (edgecomp.models.load_model), or the in-memory one it holds."""
    from edgecomp.models import load_model

    if ref.module is not None:
        return ref.module.eval()
    from edgecomp.models.loading import spec_kind

    if not ref.trusted and spec_kind(ref.spec) == "code":
        raise UserInputError(f"{ref.origin} names {ref.spec}, code this command did not name; pass --reference "
                             f"{ref.spec} (or --trust-code) to run it as the reference model, only if you trust it")
    if ref.weights and not Path(ref.weights).expanduser().exists():
        raise UserInputError(f"reference weights {ref.weights} (from {ref.origin}) not found")
    return load_model(ref.spec, weights=ref.weights, trust_pickle=ref.trust_pickle).module


def run_reference(ref: ReferenceSpec, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The reference model's first output for every sample of x (host, PyTorch eager)."""
    from edgecomp.imports import call_user_code
    from edgecomp.runtime import agent
    from edgecomp.runtime.backends.torch_eager import TorchBackend

    backend = TorchBackend(load_reference(ref))
    try:  # the model's forward is user code: its exceptions and sys.exit() are the user's errors
        return call_user_code(lambda: agent.run_all(backend.run, x, batch_size),
                              f"running the reference model {ref.describe()}",
                              hint=f" (check that --reference is the model this artifact was made from and that it "
                                   f"takes inputs of shape {tuple(x.shape[1:])})",
                              exit_hint="; a model's forward must return its outputs")
    finally:
        backend.close()


def report_accuracy(outdir: Path | None) -> float | None:
    """original_accuracy from an OUTDIR's report.json (a top-1 fraction in [0, 1]), or None (also when
    compress measured a user metric instead)."""
    from edgecomp.runtime.artifacts import outdir_report

    report = outdir_report(outdir)
    if not report or report.get("accuracy_metric", "top1") != "top1":  # a user metric's value is not a top-1
        return None
    value = report.get("original_accuracy")
    if isinstance(value, dict):  # tolerate {"top1": ...}
        value = value.get("top1")
    if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
        return float(value)
    if isinstance(value, (int, float)) and 1.0 < float(value) <= 100.0:
        return float(value) / 100.0  # given in percent
    return None
