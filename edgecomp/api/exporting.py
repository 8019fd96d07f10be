"""edgecomp.export(): the whole pipeline (analyze, compress, export, verify, report), as `edgecomp export`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgecomp.api.budgets import budget_text
from edgecomp.api.devices import as_profile
from edgecomp.api.keywords import keywords_checked
from edgecomp.exporters.onnx_export import input_shapes as as_input_shape
from edgecomp.errors import UserInputError


@dataclass(frozen=True)
class ExportResult:
    """exit_code is the CLI's (0 PASS, 1 FAIL, 3 INCONCLUSIVE); report is OUTDIR/report.json's content."""

    exit_code: int
    verdict: str
    outdir: Path
    artifact: Path | None
    report: dict


def export(
    model: Any = None,
    *,
    device: Any,
    outdir: str | os.PathLike = "edgecomp-out",
    weights: str | os.PathLike | None = None,
    input_shape: tuple[int, ...] | None = None,
    target: str | None = None,
    data: str | None = None,
    eval_data: str | None = None,
    mac_budget: float | str | None = None,
    memory_budget: float | str | None = None,
    time_budget_s: float | None = None,
    log: Callable[[str], None] = lambda _line: None,
    **options: Any,
) -> ExportResult:
    """Run the pipeline for `device` into `outdir`, resumable like the CLI (finished stages whose inputs
    and files are unchanged are reused; an in-memory model is recognised by its structure and weights).

    model    an nn.Module (input_shape required), a model spec as on the command line
             ("zoo:resnet18", "net.py:Net", "model.pt"), or None for the built-in reference model
    data, eval_data   data spec strings (the pipeline records and fingerprints them)
    Budgets as in edgecomp.compress (None: the device's; math.inf: unconstrained).
    time_budget_s    COBLA: wall-clock seconds for each compression's rank selection (`--time-budget`).
    Other keywords are
    edgecomp.pipeline.ExportRequest fields (method, scheme, latency_budget_ms, percentile,
    max_accuracy_drop, cost, max_rounds, finetune_epochs, cobla, distill, seed, force, precision,
    calibration_samples, measure, trust_pickle, torch_device, amp, workers, rank_multiple, latency_cache,
    layer_timing, never_slower: see edgecomp.compress, edgecomp.torch_device and docs/latency.md).
    cost "auto" (the default): latency, MACs and memory together when the device has a latency budget and the
    target is the device itself (its per-layer latency table is measured there, or read from the cache);
    MACs on a stand-in, without a latency budget, or with an explicit mac_budget. "macs" / "latency" force it.
    """
    from torch import nn

    from edgecomp.compression.cobla import check_time_budget
    from edgecomp.pipeline import ExportRequest, run_export

    if check_time_budget(time_budget_s, "time_budget_s") is not None:
        cobla = options.get("cobla") or {}
        if not isinstance(cobla, dict):
            raise UserInputError(f"cobla must be a dict of CoblaOptions fields, got {type(cobla).__name__}")
        options["cobla"] = {**cobla, "time_limit_s": float(time_budget_s)}
    module = model if isinstance(model, nn.Module) else None
    if module is None and model is not None and not isinstance(model, str):
        raise UserInputError(f"model must be an nn.Module, a model spec string, or None (the built-in model), "
                             f"got {type(model).__name__}")
    for value, name in ((data, "data"), (eval_data, "eval_data")):
        if value is not None and not isinstance(value, str):
            raise UserInputError(f"export takes {name} as a data spec string (e.g. 'fashion-mnist:train', "
                                 "'npz:train.npz'); for a Dataset or DataLoader use edgecomp.compress")
    shape = None
    if input_shape is not None:
        shapes = as_input_shape(input_shape)
        if len(shapes) != 1:
            raise UserInputError("export takes one input shape")
        shape = shapes[0]
    options.setdefault("progress", False)
    request = keywords_checked(
        ExportRequest, "export", profile=as_profile(device), outdir=os.fspath(outdir),
        model=None if module is not None else model, module=module, weights=None if weights is None else os.fspath(weights),
        input_shape=shape, target=target, data=data, eval_data=eval_data, mac_budget=budget_text(mac_budget, "mac_budget"),
        memory_budget=budget_text(memory_budget, "memory_budget"), **options)
    report = run_export(request, log=log)
    artifact = (report.get("final") or {}).get("export", {}).get("artifact")
    return ExportResult(exit_code=int(report["exit_code"]), verdict=str(report.get("verdict", "")),
                        outdir=Path(outdir), artifact=Path(artifact) if artifact else None, report=report)
