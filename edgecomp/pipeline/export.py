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
from edgecomp.pipeline.fingerprints import check_stage_files, model_fingerprint, module_fingerprint, sha256_file
from edgecomp.pipeline.stages import Stages

DEFAULT_MODEL = "zoo:fmnist_cnn"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "fmnist_cnn.safetensors"
DEFAULT_DATA = "fashion-mnist:train"
DEFAULT_EVAL_DATA = "fashion-mnist:test"
DEFAULT_FINETUNE_EPOCHS = 1.0
# The built-in run is a demonstration that must finish in minutes on a 2-core machine, so it uses
# lighter settings than a user's own run (CoblaOptions' defaults, one epoch of fine-tuning). The
# report records them as what they are.
BUILTIN_QUICK = {"cobla": {"max_iter": 6, "sample": 0.01, "draws": 8}, "finetune_epochs": 0.5}


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
    cp_solver: str = "als"  # scheme "cp": "als" or "spals"
    mac_budget: str | None = None
    memory_budget: str | None = None
    latency_budget_ms: float | None = None
    percentile: float | None = None
    max_accuracy_drop: float | None = 0.01
    cost: str = "auto"  # "auto" | "macs" | "latency"; resolved() turns auto into one (rounds.choose_cost)
    cost_choice: dict | None = None  # set by resolved(): {"asked", "cost", "why"}
    rank_multiple: int | None = None  # --rank-multiple; None: the profile's runtime.rank_multiple
    latency_cache: bool = True  # False (--no-cache): time every layer afresh and refresh the per-user cache
    layer_timing: str = "auto"  # --layer-timing: "isolated", "in-context" or "auto" (edgecomp.pipeline.layer_timing)
    never_slower: bool | None = None  # None: with a measured latency table; True: measure one under --cost macs too
    max_rounds: int = 3
    finetune_epochs: float | None = None  # None: DEFAULT_FINETUNE_EPOCHS (BUILTIN_QUICK's for the built-in model)
    cobla: dict = field(default_factory=dict)  # CoblaOptions overrides: max_iter, sample, draws
    distill: bool = False
    seed: int = 0
    force: bool = False
    precision: str | None = None
    calibration_samples: int | None = None  # INT8: samples of --data that calibrate; None: convert's default
    measure: dict = field(default_factory=dict)  # MeasureSettings overrides (warmup_s, iterations, ...)
    progress: bool = True
    torch_device: str = "auto"  # --torch-device / --amp / --workers (edgecomp.torch_device), for the compress stage
    amp: str = "off"
    workers: int | None = None
    # --checkpoint-every N / --resume: each round's compress stage saves fine-tuning / LC progress beside its
    # folder (round-K/.compress.checkpoint.*.pt, edgecomp.finetune.checkpoint) and deletes it once the stage is done
    checkpoint_every: int | None = None
    resume: bool = False
    settings_note: str | None = None  # set by resolved() when the built-in run's lighter settings apply
    target_environment: dict | None = None  # a remote target's agent report (run_export contacts it first)
    module: object | None = None  # an in-memory nn.Module (Python API only); `model` then only labels it

    def resolved(self) -> "ExportRequest":
        """Fill the built-in defaults: the reference model trains and evaluates on Fashion-MNIST."""
        if self.module is not None:
            if self.input_shape is None:
                raise UserInputError("an in-memory model needs input_shape=(N, C, H, W)")
            if self.weights is not None:
                raise UserInputError("weights= is for a model spec; an in-memory model carries its own")
            from edgecomp.models.loading import in_memory_label

            self.model = self.model or in_memory_label(self.module)
        elif self.model is None:
            if not DEFAULT_WEIGHTS.is_file():
                raise UserInputError(f"the built-in reference weights are missing ({DEFAULT_WEIGHTS}); reinstall edgecomp")
            self.model, self.weights = DEFAULT_MODEL, str(DEFAULT_WEIGHTS)
            self.data = self.data or DEFAULT_DATA
            self.eval_data = self.eval_data or DEFAULT_EVAL_DATA
            lighter = {k: v for k, v in BUILTIN_QUICK["cobla"].items() if k not in self.cobla}
            self.cobla = {**lighter, **self.cobla}
            if self.finetune_epochs is None:
                self.finetune_epochs = lighter["finetune_epochs"] = BUILTIN_QUICK["finetune_epochs"]
            if lighter:
                from edgecomp.compression.cobla import CoblaOptions

                usual = {**vars(CoblaOptions()), "finetune_epochs": DEFAULT_FINETUNE_EPOCHS}
                self.settings_note = ("built-in demonstration run, with lighter settings than your own runs get so that "
                                      "it finishes in minutes on 2 cores: " + ", ".join(
                                          f"--{k.replace('_', '-')} {v:g} (default {usual[k]:g})"
                                          for k, v in lighter.items()))
        if self.finetune_epochs is None:
            self.finetune_epochs = DEFAULT_FINETUNE_EPOCHS
        if self.cost not in ("auto", "macs", "latency"):
            raise UserInputError(f"--cost must be auto, macs or latency, got {self.cost!r}")
        from edgecomp.pipeline.layer_timing import LAYER_TIMINGS

        if self.layer_timing not in LAYER_TIMINGS:
            raise UserInputError(f"--layer-timing must be one of {', '.join(LAYER_TIMINGS)}, got {self.layer_timing!r}")
        if self.cost == "latency" and self.latency_budget_ms is None and self.profile.latency_budget_ms is None:
            raise UserInputError("--cost latency needs a latency budget (--latency-budget-ms or the profile's)")
        from edgecomp.factor.rank_rounding import check_rank_multiple
        from edgecomp.pipeline.rounds import choose_cost

        check_rank_multiple(self.rank_multiple)
        from edgecomp.profiles.profile import SIMD

        if self.rank_multiple is None and SIMD in self.profile.rank_multiples.values() and self.target_url() != "local":
            raise UserInputError(f"{self.profile.name}'s rank_multiple 'simd' is this host's SIMD width, not that of "
                                 f"{self.target_url()}: pass --rank-multiple N for that machine (1: no rounding)")
        self.cost_choice = self.cost_choice or choose_cost(self)
        self.cost = self.cost_choice["cost"]
        if self.max_rounds < 1:
            raise UserInputError("--max-rounds must be >= 1")
        self.precision = self.profile.check_precision(self.precision)
        self.check_values()
        return self

    def target_url(self) -> str:
        """--target, else the device profile's (runtime.harness.target_url)."""
        from edgecomp.runtime.harness import target_url

        return target_url(self.profile, self.target)

    def check_values(self) -> None:
        """Every number and budget in range, before any stage runs (verify and profile share the checks)."""
        from edgecomp.compression.cobla import CoblaOptions
        from edgecomp.compression.run import check_compress_options
        from edgecomp.runtime.harness import MeasureSettings, check_gate_options
        from edgecomp.torch_device import resolve_placement

        resolve_placement(self.torch_device, self.amp, self.workers)  # a missing GPU: exit 2 before any stage
        every = self.checkpoint_every
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise UserInputError(f"--checkpoint-every must be a whole number >= 1, got {every!r}")
        check_gate_options(self.latency_budget_ms, self.percentile, self.max_accuracy_drop)
        MeasureSettings(**self.measure).validate()
        unknown = sorted(set(self.cobla) - set(vars(CoblaOptions())))
        if unknown:
            raise UserInputError(f"unknown COBLA setting(s) {', '.join(unknown)}; known: {', '.join(vars(CoblaOptions()))}")
        check_compress_options(seed=self.seed, finetune_epochs=self.finetune_epochs, mac_budget=self.mac_budget,
                               memory_budget=self.memory_budget, cobla=CoblaOptions(**self.cobla))


def run_export(request: ExportRequest, log: Callable[[str], None] = print) -> dict:
    """Run every stage; returns the final report (its 'exit_code' is the gate's). Under torchrun rank 0
    runs the stages and the other ranks join only each round's compression (edgecomp.distributed.jobs)."""
    from edgecomp.distributed import current
    from edgecomp.distributed.jobs import follow, lead

    if not current().is_main:
        return follow()
    return lead(lambda: _run_export(request, log))


def _run_export(request: ExportRequest, log: Callable[[str], None]) -> dict:
    from edgecomp.pipeline import rounds

    req = request.resolved()
    outdir = Path(req.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserInputError(f"{outdir} exists and is not a directory")
    if not req.force:  # before any work: a newer edgecomp's stages are not reused or overwritten unasked
        check_stage_files(outdir)
    check_target_reachable(req, log)
    stages = Stages(outdir, force=req.force, log=log)
    model = module_fingerprint(req.module) if req.module is not None else model_fingerprint(req.model)
    source = {"model": model, "weights": req.weights, "weights_sha": sha256_file(req.weights),
              "input_shape": req.input_shape}
    analysis = stages.run("analyze", "analyze", {**source, "profile": req.profile.to_dict(), "scheme": req.scheme,
                                                  "precision": req.precision, "mac_budget": req.mac_budget,
                                                  "memory_budget": req.memory_budget},
                          lambda folder: rounds.analyze(req))
    history = rounds.run_rounds(req, stages, analysis, source, log)
    from edgecomp.pipeline.summary import write_summary

    return write_summary(req, outdir, analysis, history, stages.record)


def check_target_reachable(req: ExportRequest, log: Callable[[str], None]) -> None:
    """Contact a remote target once before any stage runs, so an unreachable board costs seconds, not a
    whole compression (TargetConnectionError, exit code 2, says why). Its agent's report of the target
    (CPU flags among it) is kept in `req.target_environment`: INT8 weights are chosen for that CPU."""
    from edgecomp.runtime.errors import TargetConnectionError
    from edgecomp.runtime.remote import probe_environment
    from edgecomp.runtime.transport import open_transport, parse_target

    target = req.target_url()
    if parse_target(target).kind == "local":
        return
    transport = open_transport(target, python=req.profile.target.python, workdir=req.profile.target.workdir)
    try:
        req.target_environment = probe_environment(transport)
    except TargetConnectionError as exc:
        raise TargetConnectionError(f"{exc} (check --target, or pass --target local to measure on this host as a "
                                    "stand-in for the device)") from exc
    finally:
        transport.close()
    env = req.target_environment
    log(f"[target] {target} is reachable: {env.get('machine', '?')}, Python {env.get('python', '?')}")
