"""One compress run as a service: load model/data, choose ranks, build, evaluate, write OUTDIR atomically.

OUTDIR holds model.safetensors + recipe.json (rebuild without pickle: edgecomp.factor.load_compressed),
report.json and ranks.png. The directory appears only when everything in it is complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecomp.compress.cobla import CoblaOptions
from edgecomp.compress.pipeline import METHODS, LCOptions, compress, resolve_budgets, seed_everything, split_heldout
from edgecomp.compress.report import build_report, plot_layer_costs
from edgecomp.errors import UserInputError
from edgecomp.factor.recipe import RECIPE_FILE, save_compressed
from edgecomp.graph.cost import analyze_model
from edgecomp.io import atomic_dir, write_json


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
    if outdir.exists() and (not outdir.is_dir() or (any(outdir.iterdir()) and not (outdir / RECIPE_FILE).exists())):
        raise UserInputError(f"{outdir} exists and is not an edgecomp output directory: refusing to replace it")


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


def run_compress(req: CompressRequest, log=print) -> dict:
    from edgecomp.data import load_dataset
    from edgecomp.models import load_model

    if req.method not in METHODS:
        raise UserInputError(f"unknown method {req.method!r}; choose one of {', '.join(METHODS)}")
    if req.latency_table is not None and req.method == "lc":
        raise UserInputError("--cost latency works with the rank-selection methods, not lc (use --ranks-from with lc)")
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

    original_cost = analyze_model(loaded.module, input_shape, req.scheme)
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
        "source": {"spec": loaded.spec, "weights": loaded.weights, "trust_pickle": req.trust_pickle},
        "input_shape": list(input_shape),
        "num_classes": loaded.num_classes,
        "scheme": req.scheme,
        "ranks": result.factored,
        "device": report["device"],
        "method": req.method,
    }
    with atomic_dir(outdir) as tmp:
        save_compressed(tmp, result.model, recipe)
        write_json(tmp / "report.json", report)
        plot_layer_costs(result.layers, tmp / "ranks.png", f"{loaded.spec} - {req.method}/{req.scheme}: "
                         f"{report['mac_ratio']:.2f}x MACs, {report['param_ratio']:.2f}x params")
    report["outdir"] = str(outdir)
    return report
