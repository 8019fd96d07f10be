"""The stage bodies of `edgecomp export`: analyze, then rounds of compress -> export -> verify."""

from __future__ import annotations

from pathlib import Path

from edgecomp.pipeline.fingerprints import data_fingerprint, folder_digests, sha256_file
from edgecomp.pipeline.stages import Stages

ANALYZE_FOLDER = "analyze"


def _load_source(req):
    """The source model: built from its spec, or a copy of the in-memory module (Python API)."""
    from edgecomp.models import LoadedModel, load_model

    if req.module is not None:
        import copy

        return LoadedModel(module=copy.deepcopy(req.module).eval(), spec=req.model, input_shape=tuple(req.input_shape))
    return load_model(req.model, req.weights, trust_pickle=req.trust_pickle)


def analyze(req) -> dict:
    """The original model's costs and the device budgets: does it already fit?"""
    from edgecomp.compression.methods import resolve_budgets
    from edgecomp.errors import UserInputError
    from edgecomp.graph.cost import analyze_model

    loaded = _load_source(req)
    input_shape = req.input_shape or loaded.input_shape
    if input_shape is None:
        raise UserInputError("this model has no default input shape: pass --input-shape N,C,H,W")
    cost = analyze_model(loaded.module, input_shape, req.scheme)
    budgets = resolve_budgets(cost, req.precision, req.profile, req.mac_budget, req.memory_budget)
    memory = cost.memory_bytes(req.precision)
    min_macs = cost.total_macs
    if cost.decomposable:
        from edgecomp.compression.problem import build_problem, compute_spectra

        inf = float("inf")
        min_macs = build_problem(cost, compute_spectra(loaded.module, cost), inf, inf).min_cost[0]
    return {
        "input_shape": list(input_shape),
        "num_classes": loaded.num_classes,
        "original_macs": cost.total_macs,
        "original_params": cost.total_params,
        "original_memory_bytes": memory,
        "mac_budget": budgets.macs,
        "memory_budget": budgets.memory_bytes,
        "mac_budget_source": budgets.mac_source,
        "memory_budget_source": budgets.memory_source,
        "precision": req.precision,
        "fits": cost.total_macs <= budgets.macs and memory <= budgets.memory_bytes,
        "decomposable_layers": len(cost.decomposable),
        "min_macs": min_macs,  # the smallest model the scheme can build (every layer at rank 1)
    }


def choose_cost(req) -> dict:
    """What `--cost auto` means for this run: {"asked", "cost": "latency" | "macs", "why"}.

    Latency when the device has a latency budget (--latency-budget-ms or the profile's) and the target is
    the device itself (a remote board, or this host when the profile's target is local); MACs otherwise.
    On a stand-in (--target local for a remote device) host timings say nothing about the device, so
    MACs stay; `--cost latency` there is the user's choice, labelled as the host's. Under latency the
    selection takes latency, MACs and memory together (edgecomp.ranks.latency.with_latency_budget; a MAC
    budget derived from the latency budget is dropped, an explicit one stays). An explicit --mac-budget
    asks for MACs, and the schemes that cannot select under latency (tucker2, auto) keep MACs.
    """
    from edgecomp.graph.cost import CHOICE_SCHEMES
    from edgecomp.pipeline.latency_table import latency_budget_ms

    asked = req.cost
    if asked != "auto":
        why = f"--cost {asked}"
        if asked == "latency" and _stand_in(req):
            why += f" (timed on this host, a stand-in for {req.profile.name}: the host's latency, not the device's)"
        return {"asked": asked, "cost": asked, "why": why}
    budget = latency_budget_ms(req)
    if budget is None:
        return {"asked": "auto", "cost": "macs", "why": f"auto: {req.profile.name} has no latency budget"}
    if _stand_in(req):
        return {"asked": "auto", "cost": "macs",
                "why": f"auto: the target is this host, a stand-in for {req.profile.name}; its timings say nothing "
                       "about the device (--cost latency would budget the host's latency)"}
    if req.mac_budget is not None:
        return {"asked": "auto", "cost": "macs", "why": "auto: --mac-budget given (budget MACs; --cost latency "
                                                        "budgets latency, MACs and memory together)"}
    if req.scheme in CHOICE_SCHEMES:
        return {"asked": "auto", "cost": "macs", "why": f"auto: --scheme {req.scheme} selects ranks under MACs only "
                                                        "(its choices have no per-rank latency)"}
    return {"asked": "auto", "cost": "latency",
            "why": f"auto: {req.profile.name} has a latency budget of {budget:g} ms and the target "
                   f"{req.target_url()} is the device"}


def min_latency_ms(table: dict) -> float:
    """The table's fastest model: fixed + each layer at min(dense, its fit at rank 1) (ms). A lower bound
    on what any rank selection can predict (a layer's MAC break-even can forbid rank 1)."""
    from edgecomp.ranks.latency import fitted_ms

    return float(table["fixed_ms"]) + sum(min(float(row["original_ms"]), fitted_ms(row, 1))
                                          for row in table["layers"].values())


def latency_plan(req) -> dict:
    """Whether this run measures a per-layer latency table, reads the per-user cache and applies the
    never-slower rule (edgecomp.ranks.latency.apply_latency_break_even).

    Request fields (read with defaults, so requests without them keep today's behaviour):
    never_slower: None (default) applies the rule whenever a table is measured, i.e. with --cost latency;
    True also measures one under --cost macs; False never applies it. latency_cache: False (--no-cache)
    measures every layer afresh and refreshes the cache. The choice schemes (tucker2, auto) have no
    per-rank table: --cost latency is refused there (check_scheme_method), the rule skipped.
    """
    from edgecomp.graph.cost import CHOICE_SCHEMES

    measure = req.cost == "latency" or (bool(req.never_slower) and req.scheme not in CHOICE_SCHEMES)
    return {"measure": measure, "apply": measure and req.never_slower is not False, "use_cache": req.latency_cache}


def placement_inputs(placement) -> dict:
    """What of the run's torch placement (edgecomp.torch_device.Placement) a compress stage's result depends on,
    for its fingerprint: the device type and the AMP dtype, which change the numbers (float rounding on a GPU,
    autocast); not the DataLoader workers (the batches are the same seeded ones: only their loading is
    parallel), nor the GPU's index, nor --checkpoint-every / --resume (a resumed run ends bit for bit as an
    uninterrupted one). Empty on the CPU without AMP, so stages finished before the option existed are reused."""
    from edgecomp.torch_device import amp_name

    inputs = {}
    if placement.device.type != "cpu":
        inputs["torch_device"] = placement.device.type
    if placement.amp is not None:
        inputs["amp"] = amp_name(placement.amp)
    return inputs


def run_rounds(req, stages: Stages, analysis: dict, source: dict, log) -> list[dict]:
    """Compress/export/verify until the latency gate passes or the rounds run out."""
    from edgecomp.pipeline.latency_table import latency_budget_ms
    from edgecomp.torch_device import resolve_placement

    history: list[dict] = []
    placement = placement_inputs(resolve_placement(req.torch_device, req.amp, req.workers))
    mac_budget = req.mac_budget
    budget_ms = latency_budget_ms(req)
    table = None
    plan = latency_plan(req)
    if plan["measure"]:
        from edgecomp.compression.methods import check_scheme_method
        from edgecomp.pipeline.latency_table import measure_latency_table

        # Refuse --cost latency for the choice schemes before minutes of measuring (the method is checked later).
        check_scheme_method(req.scheme, "pos-cvx", req.cost == "latency")
        table = stages.run("latency-table", "latency-table", {**source, "profile": req.profile.to_dict(),
                                                               "target": req.target, "scheme": req.scheme,
                                                               "layer_timing": req.layer_timing,
                                                               "rank_multiple": req.rank_multiple, **simd_input(req),
                                                               "precision": req.precision,
                                                               **({} if plan["use_cache"] else {"no_cache": True})},
                           lambda folder: measure_latency_table(
                               req, analysis, folder, log, loaded=_load_source(req),
                               providers=stand_in_providers(req) if _stand_in(req) else None,
                               use_cache=plan["use_cache"], layer_timing=req.layer_timing))
        # What the compress stages depend on: the numbers, not how many came from the cache.
        table = {k: v for k, v in table.items() if k != "cache"}
        fastest = min_latency_ms(table)
        if req.cost_choice and req.cost_choice.get("asked") == "auto" and budget_ms is not None and fastest > budget_ms:
            # No rank choice meets the budget by the table: MACs, and the closed-loop rounds, take over.
            req.cost = "macs"
            req.cost_choice = {**req.cost_choice, "cost": "macs", "why": (
                f"auto: the latency table's fastest model takes {fastest:.4g} ms > the {budget_ms:g} ms budget; "
                "MACs are budgeted and the measured rounds tighten them")}
            log(f"[latency-table] {req.cost_choice['why']}")
            # As under --cost macs: the never-slower rule only when asked (it would also keep the closed
            # loop from tightening MACs below what it allows); the table is still reported.
            plan = latency_plan(req)
    at_minimum = False
    # --cost auto chose latency: an original that fits MACs and memory and that the table predicts within the
    # latency budget needs no compression (the gate still measures it); an explicit --cost latency compresses.
    original_ms = None if table is None else float(table["fixed_ms"]) + sum(
        float(row["original_ms"]) for row in table["layers"].values())
    latency_fits = (bool(req.cost_choice) and req.cost_choice.get("asked") == "auto" and original_ms is not None
                    and budget_ms is not None and original_ms <= budget_ms)
    for k in range(1, req.max_rounds + 1):
        compress_needed = k > 1 or not analysis["fits"] or (req.cost == "latency" and not latency_fits)
        entry: dict = {"round": k, "mac_budget_override": mac_budget, "at_minimum": at_minimum}
        compressed = None
        if compress_needed:
            inputs = {**source, "profile": req.profile.to_dict(), "method": req.method, "scheme": req.scheme,
                      "cp_solver": req.cp_solver if req.scheme == "cp" else None,
                      "mac_budget": mac_budget, "memory_budget": req.memory_budget, "precision": req.precision,
                      "data": data_fingerprint(req.data), "eval_data": data_fingerprint(req.eval_data),
                      "finetune_epochs": req.finetune_epochs, "cobla": req.cobla,
                      "distill": req.distill, "seed": req.seed, "cost": req.cost, "latency_table": table,
                      "latency_budget_ms": budget_ms, **({"never_slower": True} if plan["apply"] else {}),
                      **({"rank_multiple": req.rank_multiple} if req.rank_multiple is not None else {}),
                      **simd_input(req), **placement}
            entry["compress"] = stages.run(
                "compress", f"round-{k}/compress", inputs,
                lambda folder, mb=mac_budget: compress_stage(req, folder, mb, table, budget_ms, log,
                                                             never_slower=plan["apply"]),
            )
            compressed = entry["compress"]["outdir"]
        else:
            predicted = f"; {original_ms:.4g} ms predicted <= {budget_ms:g} ms" if latency_fits else ""
            log(f"[compress] the original model fits {req.profile.name}'s budgets "
                f"({analysis['original_macs']:,} MACs <= {analysis['mac_budget']:,.0f}{predicted}): skipping compression")
            entry["compress"] = {"skipped": True, "reason": "the original model already fits the budgets"}
        export_inputs = {**source, "compressed": compressed,
                         "compressed_files": folder_digests(compressed) if compressed else None,
                         "profile": req.profile.to_dict(), "precision": req.precision, "target": req.target,
                         "data": data_fingerprint(req.data), "int8": int8_choice(req),
                         "calibration_samples": req.calibration_samples if req.precision == "int8" else None}
        entry["export"] = stages.run("export", f"round-{k}/export", export_inputs,
                                     lambda folder: export_stage(req, folder, compressed, analysis, log))
        verify_inputs = {**export_inputs, "artifact_sha": sha256_file(entry["export"]["artifact"]),
                         "eval_data": data_fingerprint(req.eval_data),
                         "latency_budget_ms": budget_ms, "percentile": req.percentile,
                         "max_accuracy_drop": req.max_accuracy_drop, "measure": req.measure}
        entry["verify"] = stages.run("verify", f"round-{k}/verify", verify_inputs,
                                     lambda folder: verify_stage(req, folder, entry["export"], budget_ms, log))
        if table is not None and compressed is not None and comparable_with_original(entry["export"]):
            entry["versus_original"] = stages.run(
                "versus-original", f"round-{k}/versus-original",
                {**source, "artifact_sha": verify_inputs["artifact_sha"], "profile": req.profile.to_dict(),
                 "target": req.target},
                lambda folder: versus_original_stage(req, folder, entry["export"]["artifact"], analysis, log))
        history.append(entry)
        next_budget = next_mac_budget(req, entry, analysis, budget_ms)
        if next_budget is None:
            break
        if entry["export"].get("stand_in"):
            # This host's latency says how fast this host is, not the device: cutting the model's MACs
            # until the host meets the device's budget would compress it for the wrong machine.
            entry["note"] = (f"the latency budget {budget_ms:g} ms is missed on this host, a stand-in for "
                             f"{req.profile.name}; the MAC budget is not tightened from a stand-in's latency "
                             "(measure on the device, --target ssh://... or adb, for latency-driven rounds)")
            break
        if at_minimum:
            entry["note"] = (f"the latency budget {budget_ms:g} ms cannot be met: even the smallest model this scheme "
                             f"can build misses it; {_best(history)}")
            break
        if k == req.max_rounds:
            entry["note"] = f"latency budget {budget_ms:g} ms still missed after {k} rounds; {_best(history)}"
            break
        if next_budget <= analysis["min_macs"]:
            log(f"[round {k}] the tightened MAC budget {next_budget:,.0f} is below the smallest buildable model "
                f"({analysis['min_macs']:,.0f} MACs): using that minimum")
            next_budget, at_minimum = analysis["min_macs"], True
        log(f"[round {k}] measured latency misses {budget_ms:g} ms: tightening the MAC budget to {next_budget:,.0f}")
        mac_budget = f"{int(next_budget)}"
    return history


def simd_input(req) -> dict:
    """{"simd_lanes": N} when the profile's rank multiple is "simd" (this host's width, which a profile
    fingerprint does not show), so an outdir moved to a host of another width redoes its compression."""
    from edgecomp.latency.keys import host_simd_lanes
    from edgecomp.profiles.profile import SIMD

    return {"simd_lanes": host_simd_lanes()[0]} if SIMD in req.profile.rank_multiples.values() else {}


def comparable_with_original(export: dict) -> bool:
    """An fp32 ONNX artifact, like the original model exported for the check (not INT8, not an engine)."""
    return str(export.get("artifact", "")).endswith(".onnx") and not export.get("int8")


def versus_original_stage(req, folder: Path, artifact: str, analysis: dict, log) -> dict:
    """The artifact timed against the original on the target (edgecomp.pipeline.versus_original)."""
    from edgecomp.exporters import export_onnx
    from edgecomp.pipeline.latency_table import harness_timer
    from edgecomp.pipeline.versus_original import versus_original

    original = export_onnx(_load_source(req).module, folder / "original.onnx", tuple(analysis["input_shape"])).path
    timer = harness_timer(req, stand_in_providers(req) if _stand_in(req) else None)
    result = versus_original(lambda path: timer(path).ms, original, Path(artifact))
    log(f"[versus-original] {result['message']}")
    return result


def _best(history: list[dict]) -> str:
    best = min(history, key=lambda r: r["verify"]["latency"].get("p50") or float("inf"))
    lat = best["verify"]["latency"]
    return f"best achieved: round {best['round']} with p50 {lat.get('p50') or 0:.4g} ms, p90 {lat.get('p90') or 0:.4g} ms"


def next_mac_budget(req, entry: dict, analysis: dict, budget_ms: float | None) -> float | None:
    """MAC budget for the next round when this round's latency gate FAILED, else None.

    new budget = this round's MACs x budget / measured latency at the gate's percentile (its point
    estimate: the measured ratio of how much faster the model must get), from a latency gate that says FAIL.
    """
    if budget_ms is None:
        return None
    gate = next((g for g in entry["verify"]["gates"] if g["name"].startswith("latency")), None)
    if gate is None or gate["status"] != "FAIL":
        return None
    # The point estimate, not the gate's upper bound: widened for an unstable run, the bound can be
    # several times the latency, which would cut the next round's budget far more than needed.
    measured = gate.get("estimate") or gate["measured"]
    macs = entry["compress"].get("macs", analysis["original_macs"])
    if not measured or measured <= 0:
        return None
    return macs * budget_ms / measured


def compress_stage(req, folder: Path, mac_budget: str | None, table, budget_ms, log, *,
                   never_slower: bool = False) -> dict:
    """One round's compression. `table`: the per-layer latency table, the compute cost with --cost latency;
    never_slower: also cap each layer's break-even rank by it (edgecomp.ranks.latency)."""
    from edgecomp.compression.cobla import CoblaOptions
    from edgecomp.compression.methods import LCOptions
    from edgecomp.compression.run import CompressRequest, compress_loaded, write_outdir
    from edgecomp.data import load_dataset
    from edgecomp.ranks.latency import layer_latency_rows

    method = req.method
    if method in ("cobla", "lc") and req.data is None:
        log(f"[compress] --method {method} needs --data; using the data-free pos-cvx ranks instead")
        method = "pos-cvx"
    request = CompressRequest(
        model=req.model, outdir=str(folder), weights=req.weights, trust_pickle=req.trust_pickle,
        input_shape=req.input_shape, profile=req.profile, mac_budget=mac_budget, memory_budget=req.memory_budget,
        precision=req.precision, method=method, scheme=req.scheme, cp_solver=req.cp_solver, data=req.data,
        eval_data=req.eval_data,
        seed=req.seed, cobla=CoblaOptions(**{**req.cobla, "seed": req.seed}), lc=LCOptions(seed=req.seed),
        finetune_epochs=req.finetune_epochs if req.data else 0.0, distill=req.distill, progress=req.progress,
        rank_multiple=req.rank_multiple,
        torch_device=req.torch_device, amp=req.amp, workers=req.workers,
        checkpoint_every=req.checkpoint_every, resume=req.resume,
        latency_table=table if req.cost == "latency" else None,
        latency_budget_ms=budget_ms if req.cost == "latency" else None,
        **({"never_slower_table": table} if never_slower and table is not None else {}),
    )
    data = load_dataset(req.data) if req.data else None
    eval_data = load_dataset(req.eval_data) if req.eval_data else None
    done = compress_loaded(request, _load_source(req), data, eval_data, log)
    report = write_outdir(folder, done, log)
    if done.checkpoint is not None:
        done.checkpoint.remove()  # the stage's output is written: nothing is left to resume
    return {
        "outdir": str(folder),
        "method": method,
        "macs": report["macs"],
        "params": report["params"],
        "mac_ratio": report["mac_ratio"],
        "param_ratio": report["param_ratio"],
        "accuracy": report["accuracy"],
        "original_accuracy": report["original_accuracy"],
        "accuracy_before_finetune": report.get("accuracy_before_finetune"),
        "mac_budget": report["mac_budget"],
        "cost": report.get("cost", "macs"),
        "layers": report["layers"],
        "never_slower": bool(never_slower and table is not None),
        "rank_multiple": report.get("rank_multiple"),
        "predicted_latency_ms": (report.get("selection_info") or {}).get("predicted_latency_ms"),
        **({"latency_layers": layer_latency_rows(table, chosen_ranks(report["layers"])),
            "layer_timing": table.get("layer_timing")} if table else {}),
    }


def chosen_ranks(layers: list[dict]) -> dict:
    """{layer: its rank, None where it was left dense} from a compress report's layer rows."""
    return {row["name"]: row.get("rank") if row.get("factored") else None for row in layers}


def _stand_in(req) -> bool:
    from edgecomp.runtime.transport import parse_target

    return parse_target(req.target_url()).kind == "local" and req.profile.target.transport != "local"


def stand_in_providers(req) -> list[str]:
    """ONNX Runtime providers for a local stand-in: the profile's that this host has, else CPU."""
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    return [p for p in req.profile.execution_providers if p in available] or ["CPUExecutionProvider"]


def int8_runs_on(req):
    """Which CPU (or GPU) an INT8 artifact of this run is quantized for (exporters.cpu_features): the
    remote target's CPU as its agent reported it, else "gpu", "host" or "unknown"."""
    from edgecomp.exporters.cpu_features import int8_runs_on as runs_on
    from edgecomp.runtime.transport import parse_target

    local = parse_target(req.target_url()).kind == "local"  # host or stand-in
    return runs_on(req.profile.runtime, local=local, environment=req.target_environment)


def int8_choice(req) -> dict | None:
    """The INT8 weight range this machine would choose now: part of the export stage's inputs, so a run
    resumed on a CPU that needs another range re-quantizes."""
    if req.precision != "int8":
        return None
    from edgecomp.exporters.cpu_features import int8_settings

    settings = int8_settings(int8_runs_on(req))
    return {"runs_on": settings.runs_on, "reduce_range": settings.reduce_range}


def export_stage(req, folder: Path, compressed: str | None, analysis: dict, log) -> dict:
    """model.onnx (+ model.int8.onnx) (+ model.engine, or model.trtexec.sh) of this round's model, written by
    exporters.convert: the ONNX Runtime artifact, or the TensorRT engine built where it will run."""
    from edgecomp.exporters import build_metadata
    from edgecomp.exporters.convert import CALIBRATION_SAMPLES, convert
    from edgecomp.factor import load_compressed

    # The spec on this command's own command line rebuilds the architecture (the recipe's never decides what runs).
    loaded = (load_compressed(compressed, model_spec=req.model, trust_pickle=req.trust_pickle,
                              source_module=_load_source(req).module if req.module is not None else None)
              if compressed else _load_source(req))
    input_shape = tuple(analysis["input_shape"])
    recipe = loaded.recipe or {}
    # An in-memory model has no spec that could rebuild it: the metadata names none.
    metadata = build_metadata(source_model=req.model if req.module is None else None, weights=req.weights, device=req.profile.name,
                              scheme=recipe.get("scheme"), ranks=recipe.get("ranks"), input_shape=input_shape)
    notes = []
    tensorrt = req.profile.runtime == "tensorrt"
    precision = req.precision if tensorrt or req.precision == "int8" else "fp32"  # fp16 is TensorRT's
    if precision == "int8" and req.data is None:
        notes.append("INT8 needs calibration data (--data); the artifact stays fp32")
        precision = "fp32"
    builder = _engine_builder(req, log) if tensorrt else None
    result = convert(loaded.module, folder / "model.onnx", input_shape=input_shape,
                     format="tensorrt" if tensorrt else "onnx", precision=precision,
                     calibration=req.data if precision == "int8" else None,
                     calibration_samples=req.calibration_samples or CALIBRATION_SAMPLES, runs_on=int8_runs_on(req),
                     metadata=metadata, engine_builder=builder, log=lambda message: log(f"[export] {message}"))
    onnx = result.onnx
    out = {"onnx": str(result.onnx_path), "onnx_check": {"max_abs_error": onnx.max_abs_error,
                                                         "relative_error": onnx.relative_error,
                                                         "tolerance": onnx.tolerance, "size_bytes": onnx.size_bytes},
           "notes": notes}
    q = result.quantization
    if q is not None:
        out["int8"] = {"path": str(q.path), "top1_agreement": q.top1_agreement, "accuracy_drop": q.accuracy_drop_points,
                       "int8_settings": q.int8_settings}
    if tensorrt:
        out.update(_engine_record(req, result, remote=builder is not None))
    # Without an engine, the (INT8) ONNX file is what this host can measure.
    out["artifact"] = str(result.artifact or result.int8_onnx_path or result.onnx_path)
    out["artifact_sha256"] = sha256_file(out["artifact"])
    out["stand_in"] = _stand_in(req)
    return out


def _engine_builder(req, log):
    """For a remote target, the function that builds the engine on it (engines are specific to its GPU and
    TensorRT); None to build here (this host, or a stand-in)."""
    from edgecomp.runtime.transport import parse_target

    target = req.target_url()
    if parse_target(target).kind == "local":
        return None
    from edgecomp.pipeline.remote_build import build_engine_on_target

    return lambda onnx_path, command, engine_path: build_engine_on_target(req, target, onnx_path, command,
                                                                          engine_path, log)


def _engine_record(req, result, *, remote: bool) -> dict:
    """The export stage's record of the engine: where it was built, or the script left for the device and why."""
    command = list(result.trtexec_command or ())
    if result.engine_path is not None:
        return {"engine": str(result.engine_path), "built_on": req.target_url() if remote else "local",
                "trtexec_command": command}
    error = result.engine_error if remote else f"TensorRT engines are built on the device: {result.engine_error}"
    return {"trtexec_script": str(result.trtexec_script), "trtexec_command": command, "engine_error": error}


def verify_stage(req, folder: Path, export: dict, budget_ms: float | None, log) -> dict:
    from edgecomp import runtime
    from edgecomp.runtime import MeasureSettings, ReferenceSpec, write_reports

    artifact = export["artifact"]
    providers = None
    if export.get("stand_in") and artifact.endswith(".onnx"):
        providers = stand_in_providers(req)
        log(f"[verify] measuring on this host as a stand-in for {req.profile.name} with {', '.join(providers)}")
    result = runtime.verify(
        artifact, req.profile, target=req.target, data_spec=req.eval_data, latency_budget_ms=budget_ms,
        percentile=req.percentile, max_accuracy_drop=req.max_accuracy_drop if req.eval_data else None,
        reference=ReferenceSpec(req.model, req.weights, req.trust_pickle, module=_load_source(req).module
                                if req.module is not None else None), settings=MeasureSettings(**req.measure),
        providers=providers,
    )
    paths = {"json": folder / "verify.json", "markdown": folder / "verify.md", "junit": folder / "junit.xml",
             "histogram": folder / "latency.png"}
    write_reports(result, json_path=paths["json"], markdown_path=paths["markdown"], junit_path=paths["junit"],
                  histogram_path=paths["histogram"])
    report = result.to_dict()
    latency = report["report"]["latency"]
    return {
        "exit_code": result.exit_code,
        "verdict": result.verdict,
        "gates": [{"name": g["name"], "status": g["status"], "measured": g["measured"], "threshold": g["threshold"],
                   "unit": g["unit"], "message": g["message"], "estimate": (g.get("details") or {}).get("estimate_ms")}
                  for g in report["gates"]],
        "latency": {k: latency.get(k) for k in ("mean", "p50", "p90", "p99", "cv", "robust_cv", "unstable", "n")},
        "accuracy": report["report"].get("accuracy"),
        "reference": report["report"].get("reference"),
        "context": result.report.context_line(),
        "files": {k: str(v) for k, v in paths.items()},
    }
