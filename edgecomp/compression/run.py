"""One compress run as a service: load model/data, choose ranks, build, evaluate, write OUTDIR atomically.

OUTDIR holds model.safetensors + recipe.json (rebuild without pickle: edgecomp.factor.load_compressed),
model.onnx (the verified export: evaluate, verify and convert use it without running any code),
report.json, ranks.png and the manifest of the files edgecomp wrote (edgecomp.outdir). A new OUTDIR
appears only when everything in it is complete; in an existing one only edgecomp's own files are
replaced (recipe.json last), and a user's file is never touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import METHODS, LCOptions, compress, resolve_budgets, seed_everything, split_heldout
from edgecomp.compression.report import build_report, plot_layer_costs
from edgecomp.errors import UserInputError
from edgecomp.errors import EdgecompError
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
    progress: bool = True


def _check_outdir(outdir: Path) -> None:
    """Fail before the work: OUTDIR must be new, empty, or an output directory whose files we would
    replace are edgecomp's own (see edgecomp.outdir)."""
    check_replaceable(outdir, COMPRESS_FILES)


def _export_onnx(model, path: Path, input_shape, recipe: dict, log) -> dict:
    """Write the verified model.onnx beside the weights; a model that cannot be exported still gets its
    OUTDIR (without model.onnx), and the report says why."""
    from edgecomp.exporters.metadata import metadata_from_recipe
    from edgecomp.exporters.onnx_export import export_onnx

    try:
        result = export_onnx(model, path, tuple(input_shape), metadata=metadata_from_recipe(recipe))
    except EdgecompError as exc:
        log(f"warning: {ONNX_FILE} not written ({exc}); evaluate/verify/convert of this directory will rebuild "
            "the model in PyTorch")
        return {"written": False, "error": str(exc)}
    return {"written": True, "file": ONNX_FILE, "opset": result.opset, "dynamic_batch": result.dynamic_batch,
            "max_abs_error": result.max_abs_error, "relative_error": result.relative_error,
            "tolerance": result.tolerance, "check_batch": result.check_batch,
            "folded_batchnorms": result.folded_batchnorms}


def _evaluate(model, dataset) -> float | None:
    if dataset is None or not dataset.has_labels:
        return None
    from edgecomp.finetune import evaluate

    return evaluate(model, dataset)["top1"]


def _finetune(req: CompressRequest, result, original, data) -> dict:
    """Fine-tune (labels) or distill from the original model (no labels needed) on the training data.

    The best checkpoint is chosen on a held-out part of the *training* data, never on --eval-data.
    """
    from edgecomp.data import SubsetDataset
    from edgecomp.finetune import train

    if data is None:
        raise UserInputError("--finetune-epochs needs training data: pass --data SPEC")
    train_idx, heldout_idx = split_heldout(len(data), 0.1, req.seed)
    teacher = original if (req.distill or not data.has_labels) else None
    trained = train(
        result.model, SubsetDataset(data, train_idx), epochs=req.finetune_epochs, lr=req.finetune_lr, seed=req.seed,
        eval_data=SubsetDataset(data, heldout_idx), teacher=teacher, distill_alpha=1.0 if teacher is not None else 0.0,
        progress=req.progress,
    )
    result.model = trained.model.eval()
    result.timings["finetune_s"] = trained.seconds
    return {
        "epochs": req.finetune_epochs,
        "lr": req.finetune_lr,
        "mode": "distillation" if teacher is not None else "labels",
        "steps": trained.steps,
        "best_step": trained.best_step,
        "best_heldout": trained.best_accuracy,
        "metric": trained.metric,
        "curve": trained.history,
    }


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
    check_compress_options(seed=req.seed, finetune_epochs=req.finetune_epochs, mac_budget=req.mac_budget,
                           memory_budget=req.memory_budget, cobla=req.cobla, finetune_lr=req.finetune_lr)
    if req.profile is not None and req.precision is not None:
        req.profile.check_precision(req.precision)


def run_compress(req: CompressRequest, log=print) -> dict:
    from edgecomp.data import load_dataset
    from edgecomp.models import load_model

    if req.method not in METHODS:
        raise UserInputError(f"unknown method {req.method!r}; choose one of {', '.join(METHODS)}")
    if req.latency_table is not None and req.method == "lc":
        raise UserInputError("--cost latency works with the rank-selection methods, not lc (use --ranks-from with lc)")
    _check_options(req)
    outdir = Path(req.outdir)
    _check_outdir(outdir)
    seed_everything(req.seed)
    loaded = load_model(req.model, req.weights, trust_pickle=req.trust_pickle)
    input_shape = req.input_shape or loaded.input_shape
    if input_shape is None:
        raise UserInputError("this model has no default input shape: pass --input-shape N,C,H,W")
    precision = req.precision or (req.profile.default_precision if req.profile else "fp32")
    data = load_dataset(req.data) if req.data else None
    eval_data = load_dataset(req.eval_data) if req.eval_data else None
    for ds, flag in ((data, "--data"), (eval_data, "--eval-data")):
        if ds is not None and tuple(ds.sample_shape) != tuple(input_shape[1:]):
            raise UserInputError(f"{flag} samples have shape {tuple(ds.sample_shape)} but the model input is {tuple(input_shape[1:])}")
    if data is not None or eval_data is not None:
        from edgecomp.data.fit import check_dataset_fits, output_width

        width = output_width(loaded.module, input_shape)
        for ds, flag in ((data, "--data"), (eval_data, "--eval-data")):
            if ds is not None:
                check_dataset_fits(ds, width, data=f"{flag} {ds.name}", model=loaded.spec)

    original_cost = analyze_model(loaded.module, input_shape, req.scheme)
    if not original_cost.decomposable:
        raise UserInputError(f"{loaded.spec} has no decomposable layer (Conv2d or Linear): there is nothing to "
                             f"compress (see `edgecomp inspect {loaded.spec}`)")
    budgets = resolve_budgets(original_cost, precision, req.profile, req.mac_budget, req.memory_budget)
    fits = original_cost.total_macs <= budgets.macs and original_cost.memory_bytes(precision) <= budgets.memory_bytes
    if fits:
        log(f"note: the original model already fits the budgets ({original_cost.total_macs:,} MACs); compressing anyway as asked")

    bar = None
    callback = None
    if req.method == "cobla" and req.progress:
        from tqdm import tqdm

        bar = tqdm(total=req.cobla.max_iter, desc="COBLA SQP", unit="it", leave=False)

        def callback(record: dict) -> None:
            bar.update(1)
            bar.set_postfix(
                loss=f"{record.get('loss', float('nan')):.4f}",
                macs=f"{record.get('N_C', 0) / budgets.macs:.3f}xB" if budgets.macs != float("inf") else "-",
                step=f"{record.get('step_size', float('nan')):.2g}",
            )

    t0 = time.perf_counter()
    try:
        result = compress(
            loaded.module, input_shape, budgets, method=req.method, scheme=req.scheme, data=data,
            cobla=req.cobla, lc=req.lc, callback=callback, latency_table=req.latency_table,
            latency_budget_ms=req.latency_budget_ms,
        )
    finally:
        if bar is not None:
            bar.close()
    t_eval = time.perf_counter()
    original_accuracy = _evaluate(loaded.module, eval_data)
    accuracy = _evaluate(result.model, eval_data)
    result.timings["evaluate_s"] = time.perf_counter() - t_eval
    extra = {"accuracy_before_finetune": accuracy, "finetune": None}
    if req.finetune_epochs > 0:
        extra["finetune"] = _finetune(req, result, loaded.module, data)
        accuracy = _evaluate(result.model, eval_data)
    result.timings["wall_s"] = time.perf_counter() - t0
    report = build_report(
        result, method=req.method, scheme=req.scheme, budgets=budgets,
        original_cost=(original_cost.total_macs, original_cost.total_params),
        accuracy=accuracy, original_accuracy=original_accuracy, model_spec=loaded.spec, weights=loaded.weights,
        input_shape=input_shape, device=req.profile.name if req.profile else None,
        extra={"original_fits": fits, "data": req.data, "eval_data": req.eval_data, "seed": req.seed,
               "cost": "latency" if req.latency_table else "macs", "latency_budget_ms": req.latency_budget_ms, **extra},
    )
    recipe = {
        "source": {"spec": loaded.spec, "weights": loaded.weights},
        "input_shape": list(input_shape),
        "num_classes": loaded.num_classes,
        "scheme": req.scheme,
        "ranks": result.factored,
        "device": report["device"],
        "method": req.method,
    }
    with replace_outputs(outdir, COMPRESS_FILES, by="compress", log=log) as tmp:
        save_compressed(tmp, result.model, recipe)
        report["onnx"] = _export_onnx(result.model, tmp / ONNX_FILE, input_shape, recipe, log)
        write_json(tmp / REPORT_FILE, report)
        plot_layer_costs(result.layers, tmp / RANKS_FILE, f"{loaded.spec} - {req.method}/{req.scheme}: "
                         f"{report['mac_ratio']:.2f}x MACs, {report['param_ratio']:.2f}x params")
    report["outdir"] = str(outdir)
    return report
