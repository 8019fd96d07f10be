"""One compress run as a service: load model/data, choose ranks, build, evaluate, write OUTDIR atomically.

OUTDIR holds model.safetensors + recipe.json (rebuild without pickle: edgecomp.factor.load_compressed),
model.onnx (the verified export: evaluate, verify and convert use it without running any code),
report.json, ranks.png and the manifest of the files edgecomp wrote (edgecomp.outdir). A new OUTDIR
appears only when everything in it is complete; in an existing one only edgecomp's own files are
replaced (recipe.json last), and a user's file is never touched.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import (METHODS, CompressResult, FinetuneOptions, LCOptions, compress,
                                          finetune_compressed, resolve_budgets, seed_everything)
from edgecomp.compression.report import build_report, plot_layer_costs
from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.factor.recipe import save_compressed
from edgecomp.graph.cost import analyze_model
from edgecomp.io import write_json
from edgecomp.outdir import COMPRESS_FILES, ONNX_FILE, RANKS_FILE, REPORT_FILE, check_replaceable, replace_outputs


@dataclass
class CompressRequest:
    model: str
    outdir: str
    weights: str | None = None
    trust_pickle: bool = False
    input_shape: tuple[int, ...] | None = None
    profile: object | None = None  # edgecomp.profiles.DeviceProfile
    mac_budget: str | None = None
    memory_budget: str | None = None
    precision: str | None = None
    method: str = "cobla"
    scheme: str = "spatial"
    cp_solver: str = "als"  # scheme "cp": the CP fit at each layer's largest rank, "als" or "spals"
    data: str | None = None
    eval_data: str | None = None
    seed: int = 0
    cobla: CoblaOptions = field(default_factory=CoblaOptions)
    lc: LCOptions = field(default_factory=LCOptions)
    finetune_epochs: float = 0.0
    finetune_lr: float = 0.01
    distill: bool = False
    latency_table: dict | None = None  # per-layer latency fits (edgecomp export --cost latency)
    latency_budget_ms: float | None = None
    # per-layer latency table whose never-slower rule caps each layer's break-even rank
    # (edgecomp.ranks.latency.apply_latency_break_even; edgecomp export measures it)
    never_slower_table: dict | None = None
    # round factored ranks down to this multiple (--rank-multiple; None: the profile's, 1: no rounding)
    rank_multiple: int | None = None
    progress: bool = True
    # edgecomp.torch_device: --torch-device auto|cpu|cuda|cuda:N|mps, --amp off|bf16|fp16, --workers N (None: by device)
    torch_device: str = "auto"
    amp: str = "off"
    workers: int | None = None
    # --checkpoint-every N / --resume (edgecomp.finetune.checkpoint); checkpoint: its path (None: beside outdir)
    checkpoint_every: int | None = None
    resume: bool = False
    checkpoint: str | None = None
    # Python API only (edgecomp.compress), never read from a file: the user's COBLA loss
    # loss_fn(model, batch), fine-tuning loop finetune_fn(model, penalty_fn, steps), metric(outputs, targets).
    loss_fn: Callable | None = None
    finetune_fn: Callable | None = None
    metric: Callable | None = None


def _check_outdir(outdir: Path) -> None:
    """Fail before the work: OUTDIR must be new, empty, or an output directory whose files we would
    replace are edgecomp's own (see edgecomp.outdir)."""
    check_replaceable(outdir, COMPRESS_FILES)


def _export_onnx(model, path: Path, input_shape, recipe: dict, log) -> dict:
    """Write the verified model.onnx beside the weights; a model that cannot be exported still gets its
    OUTDIR (without model.onnx), and the report says why."""
    from edgecomp.exporters.metadata import metadata_from_recipe
    from edgecomp.exporters.onnx_export import export_onnx

    metadata = metadata_from_recipe(recipe)
    try:
        result = export_onnx(model, path, tuple(input_shape), metadata=metadata)
    except EdgecompError as exc:
        log(f"warning: {ONNX_FILE} not written ({exc}); evaluate/verify/convert of this directory will rebuild "
            "the model in PyTorch")
        return {"written": False, "error": str(exc)}
    return {"written": True, "file": ONNX_FILE, "opset": result.opset, "dynamic_batch": result.dynamic_batch,
            "max_abs_error": result.max_abs_error, "relative_error": result.relative_error,
            "tolerance": result.tolerance, "check_batch": result.check_batch,
            "folded_batchnorms": result.folded_batchnorms}


def evaluate_accuracy(model, dataset, metric=None, placement=None) -> float | None:
    """Top-1 on labelled data, or the user's metric(outputs, targets) (Python API) on any data; None
    without data (or without labels and a metric). placement: edgecomp.torch_device.Placement."""
    if dataset is None or (metric is None and not dataset.has_labels):
        return None
    from edgecomp.finetune import evaluate

    result = evaluate(model, dataset, metric=metric, placement=placement)
    return result["metric"] if metric is not None else result["top1"]


def _finetune(req: CompressRequest, result, original, data, placement=None, checkpoint=None) -> dict:
    """Fine-tune (labels) or distill from the original model (no labels needed) on the training data,
    or run the user's train_fn; the best checkpoint is chosen on a held-out part of the *training*
    data, never on --eval-data (edgecomp.compression.methods.finetune_compressed)."""
    options = FinetuneOptions(epochs=req.finetune_epochs, lr=req.finetune_lr, distill=req.distill, seed=req.seed,
                              progress=req.progress, train_fn=req.finetune_fn, metric=req.metric,
                              placement=placement, checkpoint=checkpoint)
    return finetune_compressed(result, original, data, options)


def check_compress_options(*, seed, finetune_epochs: float, mac_budget: str | None = None,
                           memory_budget: str | None = None, cobla: CoblaOptions | None = None,
                           finetune_lr: float | None = None) -> None:
    """The numbers of a compression, before any work: shared by compress and export (the CLI's option
    types check the same while parsing)."""
    import math

    from edgecomp.profiles.units import parse_mac_budget, parse_memory_budget

    if not (isinstance(seed, int) and seed >= 0):
        raise UserInputError(f"--seed must be a non-negative integer, got {seed!r}")
    if not (math.isfinite(finetune_epochs) and finetune_epochs >= 0):
        raise UserInputError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    if finetune_lr is not None and not (math.isfinite(finetune_lr) and finetune_lr > 0):
        raise UserInputError(f"--finetune-lr must be > 0, got {finetune_lr}")
    if cobla is not None:
        sample = cobla.sample
        if not (math.isfinite(sample) and sample > 0 and (sample <= 1 or sample == int(sample))):
            raise UserInputError(f"--sample must be a fraction in (0, 1] or a whole number of samples, got {sample}")
        if cobla.max_iter < 1 or cobla.draws < 1:
            raise UserInputError("--max-iter and --draws must be >= 1")
    for text, parse in ((mac_budget, parse_mac_budget), (memory_budget, parse_memory_budget)):
        if text is not None:
            parse(text, 1.0)  # the syntax and sign; a fraction's size needs the model


def _check_options(req: CompressRequest) -> None:
    from edgecomp.torch_device import resolve_placement

    resolve_placement(req.torch_device, req.amp, req.workers)  # first: a missing GPU refuses before any work
    check_compress_options(seed=req.seed, finetune_epochs=req.finetune_epochs, mac_budget=req.mac_budget,
                           memory_budget=req.memory_budget, cobla=req.cobla, finetune_lr=req.finetune_lr)
    if req.profile is not None and req.precision is not None:
        req.profile.check_precision(req.precision)


@dataclass
class Compressed:
    """A compression done in memory: the factored model and what `edgecomp compress` writes to OUTDIR."""

    result: CompressResult  # .model is the factored nn.Module, .ranks/.factored the chosen ranks
    report: dict  # report.json (without the "onnx" and "outdir" entries, which writing adds)
    recipe: dict  # recipe.json: how to rebuild the factored model from its weights without pickle
    input_shape: tuple[int, ...]
    title: str  # ranks.png's title
    checkpoint: object | None = None  # edgecomp.finetune.checkpoint.Checkpoint: removed once OUTDIR is written


def _check_data(loaded, input_shape, data, eval_data) -> None:
    for ds, flag in ((data, "--data"), (eval_data, "--eval-data")):
        if ds is not None and tuple(ds.sample_shape) != tuple(input_shape[1:]):
            raise UserInputError(f"{flag} samples have shape {tuple(ds.sample_shape)} but the model input is {tuple(input_shape[1:])}")
    if data is not None or eval_data is not None:
        from edgecomp.data.fit import check_dataset_fits, output_width

        width = output_width(loaded.module, input_shape)
        for ds, flag in ((data, "--data"), (eval_data, "--eval-data")):
            if ds is not None:
                check_dataset_fits(ds, width, data=f"{flag} {ds.name}", model=loaded.spec)


def _check_method(req: CompressRequest) -> None:
    if req.method not in METHODS:
        raise UserInputError(f"unknown method {req.method!r}; choose one of {', '.join(METHODS)}")
    from edgecomp.factor.schemes import CP_SOLVERS
    from edgecomp.graph.cost import SCHEMES

    if req.scheme not in SCHEMES:
        raise UserInputError(f"unknown scheme {req.scheme!r}; choose one of {', '.join(SCHEMES)}")
    if req.cp_solver not in CP_SOLVERS:
        raise UserInputError(f"unknown CP solver {req.cp_solver!r}; choose one of {', '.join(CP_SOLVERS)}")
    from edgecomp.compression.methods import check_scheme_method

    check_scheme_method(req.scheme, req.method, req.latency_table is not None)
    _check_options(req)


def compress_loaded(req: CompressRequest, loaded, data=None, eval_data=None, log=print) -> Compressed:
    """Choose ranks for an already built model (edgecomp.models.LoadedModel), build the factored model,
    evaluate and fine-tune it, in memory. `data`/`eval_data` are EdgeDatasets (req.data/eval_data are
    only recorded). run_compress and the Python API (edgecomp.compress) both come through here."""
    from edgecomp.distributed.jobs import share_job
    from edgecomp.models.loading import is_in_memory

    # Under `edgecomp export` on several processes the other ranks join here (a no-op otherwise).
    share_job(follow_compress, req, loaded if is_in_memory(loaded.spec) else None)
    _check_method(req)
    seed_everything(req.seed)
    from edgecomp.finetune.checkpoint import checkpoint_for
    from edgecomp.torch_device import resolve_placement

    placement = resolve_placement(req.torch_device, req.amp, req.workers)
    checkpoint = checkpoint_for(req.outdir, req.checkpoint_every, req.resume, req.checkpoint, log=log)
    input_shape = tuple(req.input_shape or loaded.input_shape or ())
    if not input_shape:
        raise UserInputError("this model has no default input shape: pass --input-shape N,C,H,W")
    precision = req.precision or (req.profile.default_precision if req.profile else "fp32")
    _check_data(loaded, input_shape, data, eval_data)
    from edgecomp.factor.rank_rounding import resolve_rank_multiple

    rank_multiple, multiple_source = resolve_rank_multiple(req.rank_multiple, req.profile, precision)

    original_cost = analyze_model(loaded.module, input_shape, req.scheme)
    if not original_cost.decomposable:
        raise UserInputError(f"{loaded.spec} has no decomposable layer (Conv2d or Linear): there is nothing to "
                             f"compress (see `edgecomp inspect {loaded.spec}`)")
    budgets = resolve_budgets(original_cost, precision, req.profile, req.mac_budget, req.memory_budget)
    fits = original_cost.total_macs <= budgets.macs and original_cost.memory_bytes(precision) <= budgets.memory_bytes
    if fits and req.latency_budget_ms is None:
        log(f"note: the original model already fits the budgets ({original_cost.total_macs:,} MACs); compressing anyway as asked")

    bar = None
    callback = None
    if req.method == "cobla" and req.progress:
        from tqdm import tqdm

        bar = tqdm(total=req.cobla.max_iter, desc="COBLA SQP", unit="it", leave=False)
        # The SQP's N_C is in its problem's compute unit: ms with a latency table, else MACs.
        compute_budget = req.latency_budget_ms if req.latency_table is not None else budgets.macs

        def on_iteration(record: dict) -> None:
            bar.update(1)
            bar.set_postfix(
                loss=f"{record.get('loss', float('nan')):.4f}",
                compute=(f"{record.get('N_C', 0) / compute_budget:.3f}xB"
                         if compute_budget not in (None, float("inf")) else "-"),
                step=f"{record.get('step_size', float('nan')):.2g}",
            )

        callback = on_iteration

    t0 = time.perf_counter()
    try:
        result = compress(
            loaded.module, input_shape, budgets, method=req.method, scheme=req.scheme, data=data,
            cobla=req.cobla, lc=dataclasses.replace(req.lc, placement=req.lc.placement or placement,
                                                    checkpoint=req.lc.checkpoint or checkpoint),
            callback=callback, latency_table=req.latency_table,
            latency_budget_ms=req.latency_budget_ms, loss_fn=req.loss_fn, cp_solver=req.cp_solver, seed=req.seed,
            never_slower_table=req.never_slower_table, rank_multiple=rank_multiple,
        )
    finally:
        if bar is not None:
            bar.close()
    t_eval = time.perf_counter()
    original_accuracy = evaluate_accuracy(loaded.module, eval_data, req.metric, placement)
    accuracy = evaluate_accuracy(result.model, eval_data, req.metric, placement)
    result.timings["evaluate_s"] = time.perf_counter() - t_eval
    extra = {"accuracy_before_finetune": accuracy, "finetune": None}
    if req.finetune_epochs > 0:
        extra["finetune"] = _finetune(req, result, loaded.module, data, placement, checkpoint)
        accuracy = evaluate_accuracy(result.model, eval_data, req.metric, placement)
    result.timings["wall_s"] = time.perf_counter() - t0
    report = build_report(
        result, method=req.method, scheme=req.scheme, budgets=budgets,
        original_cost=(original_cost.total_macs, original_cost.total_params),
        accuracy=accuracy, original_accuracy=original_accuracy, model_spec=loaded.spec, weights=loaded.weights,
        input_shape=input_shape, device=req.profile.name if req.profile else None,
        extra={"original_fits": fits, "data": req.data, "eval_data": req.eval_data, "seed": req.seed,
               "cost": "latency" if req.latency_table else "macs", "latency_budget_ms": req.latency_budget_ms,
               "accuracy_metric": "user metric" if req.metric is not None else "top1",
               **placement.describe(),
               "checkpoint": {"every": req.checkpoint_every, "resumed_from": dict(checkpoint.resumed)} if checkpoint else None,
               "distributed": _processes(placement),
               "rank_multiple": {"multiple": rank_multiple, "source": multiple_source},
               **({"cp_solver": req.cp_solver} if req.scheme == "cp" else {}), **extra},
    )
    from edgecomp.models.loading import is_in_memory

    # An in-memory model (the Python API) has no spec that rebuilds it: the recipe says so instead.
    source = ({"spec": None, "weights": None, "in_memory": type(loaded.module).__name__} if is_in_memory(loaded.spec)
              else {"spec": loaded.spec, "weights": loaded.weights})
    recipe = {
        "source": source,
        "input_shape": list(input_shape),
        "num_classes": loaded.num_classes,
        "scheme": req.scheme,
        "ranks": result.factored,
        "device": report["device"],
        "method": req.method,
    }
    title = (f"{loaded.spec} - {req.method}/{req.scheme}: "
             f"{report['mac_ratio']:.2f}x MACs, {report['param_ratio']:.2f}x params")
    return Compressed(result=result, report=report, recipe=recipe, input_shape=input_shape, title=title,
                      checkpoint=checkpoint)


def follow_compress(req: CompressRequest, loaded=None) -> None:
    """Another rank's part of rank 0's compress_loaded(req, ...) (edgecomp.distributed.jobs): the same
    model (`loaded` when it is in memory, else rebuilt from req.model) and data, loaded here; nothing is written."""
    from edgecomp.data import load_dataset
    from edgecomp.models import load_model

    loaded = loaded or load_model(req.model, req.weights, trust_pickle=req.trust_pickle)
    data = load_dataset(req.data) if req.data else None
    eval_data = load_dataset(req.eval_data) if req.eval_data else None
    compress_loaded(req, loaded, data, eval_data, log=lambda message: None)


def _processes(placement) -> dict:
    """report.json's "distributed": world_size, backend (None for one process) and the torch device the work ran
    on (the built model itself always comes back to the CPU)."""
    from edgecomp.distributed import current

    return current().describe(str(placement.device))


def write_outdir(outdir: str | Path, done: Compressed, log=print) -> dict:
    """Write OUTDIR atomically (model.safetensors, recipe.json, model.onnx, report.json, ranks.png);
    returns report.json's content with "outdir" added."""
    outdir = Path(outdir)
    from edgecomp.distributed import current

    if not current().is_main:  # several processes (torchrun): rank 0 alone writes OUTDIR
        return {**done.report, "outdir": str(outdir)}
    _check_outdir(outdir)
    report = dict(done.report)
    with replace_outputs(outdir, COMPRESS_FILES, by="compress", log=log) as tmp:
        save_compressed(tmp, done.result.model, done.recipe)
        report["onnx"] = _export_onnx(done.result.model, tmp / ONNX_FILE, done.input_shape, done.recipe, log)
        write_json(tmp / REPORT_FILE, report)
        plot_layer_costs(done.result.layers, tmp / RANKS_FILE, done.title)
    report["outdir"] = str(outdir)
    return report


def run_compress(req: CompressRequest, log=print) -> dict:
    """`edgecomp compress`: load the model and data named by `req`, compress, write req.outdir."""
    from edgecomp.data import load_dataset
    from edgecomp.models import load_model

    _check_method(req)
    _check_outdir(Path(req.outdir))  # before any work
    seed_everything(req.seed)
    loaded = load_model(req.model, req.weights, trust_pickle=req.trust_pickle)
    data = load_dataset(req.data) if req.data else None
    eval_data = load_dataset(req.eval_data) if req.eval_data else None
    done = compress_loaded(req, loaded, data, eval_data, log)
    report = write_outdir(req.outdir, done, log)
    if done.checkpoint is not None:
        done.checkpoint.remove()  # the run is complete: its checkpoints are not needed to resume it
    return report
