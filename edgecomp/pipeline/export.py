"""run_export(): the whole pipeline for one device, as resumable stages in OUTDIR.

OUTDIR/
  analyze/            the original model's costs and the device budgets (stage.json)
  round-K/compress/   compress OUTDIR of round K (absent when the model already fits)
  round-K/export/     model.onnx (+ model.int8.onnx, model.engine or model.trtexec.sh)
  round-K/verify/     verify.json, verify.md, junit.xml, latency.png
  latency-table/      per-layer latency fits measured on the target (--cost latency)
  report.json, report.md, report.html
Round K+1 exists only when round K missed the latency budget: its MAC budget is round K's MACs
times (budget / measured latency at the gate's percentile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgecomp.errors import UserInputError
from edgecomp.pipeline.stages import Stages, file_digest

DEFAULT_MODEL = "zoo:fmnist_cnn"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "fmnist_cnn.safetensors"
DEFAULT_DATA = "fashion-mnist:train"
DEFAULT_EVAL_DATA = "fashion-mnist:test"


@dataclass
class ExportRequest:
    profile: object  # edgecomp.profiles.DeviceProfile
    outdir: str
    model: str | None = None  # None: the built-in reference (Fashion-MNIST CNN with shipped weights)
    weights: str | None = None
    trust_pickle: bool = False
    input_shape: tuple[int, ...] | None = None
    target: str | None = None
    data: str | None = None
    eval_data: str | None = None
    method: str = "cobla"
    scheme: str = "spatial"
    mac_budget: str | None = None
    memory_budget: str | None = None
    latency_budget_ms: float | None = None
    percentile: float | None = None
    max_accuracy_drop: float | None = 0.01
    cost: str = "macs"  # "macs" | "latency"
    max_rounds: int = 3
    finetune_epochs: float = 1.0
    distill: bool = False
    seed: int = 0
    force: bool = False
    precision: str | None = None
    measure: dict = field(default_factory=dict)  # MeasureSettings overrides (warmup_s, iterations, ...)
    progress: bool = True

    def resolved(self) -> "ExportRequest":
        """Fill the built-in defaults: the reference model trains and evaluates on Fashion-MNIST."""
        if self.model is None:
            if not DEFAULT_WEIGHTS.is_file():
                raise UserInputError(f"the built-in reference weights are missing ({DEFAULT_WEIGHTS}); reinstall edgecomp")
            self.model, self.weights = DEFAULT_MODEL, str(DEFAULT_WEIGHTS)
            self.data = self.data or DEFAULT_DATA
            self.eval_data = self.eval_data or DEFAULT_EVAL_DATA
        if self.cost not in ("macs", "latency"):
            raise UserInputError(f"--cost must be macs or latency, got {self.cost!r}")
        if self.cost == "latency" and self.latency_budget_ms is None and self.profile.latency_budget_ms is None:
            raise UserInputError("--cost latency needs a latency budget (--latency-budget-ms or the profile's)")
        if self.max_rounds < 1:
            raise UserInputError("--max-rounds must be >= 1")
        self.precision = self.precision or self.profile.default_precision
        if self.precision not in self.profile.precisions:
            raise UserInputError(f"device {self.profile.name} supports {', '.join(self.profile.precisions)}, not {self.precision}")
        return self


def run_export(request: ExportRequest, log: Callable[[str], None] = print) -> dict:
    """Run every stage; returns the final report (its 'exit_code' is the gate's)."""
    from edgecomp.pipeline import rounds

    req = request.resolved()
    outdir = Path(req.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserInputError(f"{outdir} exists and is not a directory")
    stages = Stages(outdir, force=req.force, log=log)
    source = {"model": req.model, "weights": req.weights, "weights_sha": file_digest(req.weights),
              "input_shape": req.input_shape}
    analysis = stages.run("analyze", "analyze", {**source, "profile": req.profile.to_dict(), "scheme": req.scheme,
                                                  "precision": req.precision, "mac_budget": req.mac_budget,
                                                  "memory_budget": req.memory_budget},
                          lambda folder: rounds.analyze(req))
    history = rounds.run_rounds(req, stages, analysis, source, log)
    from edgecomp.pipeline.summary import write_summary

    return write_summary(req, outdir, analysis, history, stages.record)
