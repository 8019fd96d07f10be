"""`edgecomp export`: the whole pipeline for one device in one command, gating with the verify exit code."""

from __future__ import annotations

import click

from edgecomp.cli.common import (COUNT, FRACTION, NON_NEGATIVE, PERCENTILE, POSITIVE, SEED, OutputPath, SampleAmount, device_options,
                                 emit, json_option, model_options, parse_input_shape, progress_enabled, resolve_profile,
                                 resume_options, torch_options)
from edgecomp.cli.compress import RANK_MULTIPLE_HELP, STOP_HELP, THREADS_HELP, TIME_BUDGET_HELP, set_threads
from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import METHODS
from edgecomp.factor.schemes import CP_SOLVERS
from edgecomp.pipeline.export import BUILTIN_QUICK, DEFAULT_FINETUNE_EPOCHS
from edgecomp.graph.cost import SCHEMES


_COBLA = CoblaOptions()


def _human(report: dict) -> None:
    final = report["final"]
    click.echo("")
    click.echo(f"{report['model']} on {report['device']}: {report['verdict']} (exit {report['exit_code']})")
    click.echo(f"  measured on {report['measured_on']}")
    if report.get("cost_choice"):
        click.echo(f"  cost: {report['cost_choice']['cost']} ({report['cost_choice']['why']})")
    for r in report["rounds"]:
        comp, lat = r["compress"], r["verify"]["latency"]
        what = ("original (fits)" if comp.get("skipped") else
                f"{comp['method']}: {comp['mac_ratio']:.3f}x MACs, {comp['param_ratio']:.3f}x params")
        click.echo(f"  round {r['round']}: {what}; latency p50 {lat.get('p50') or 0:.4f} ms, p90 {lat.get('p90') or 0:.4f} ms")
        accuracy = _accuracy_line(comp)
        if accuracy:
            click.echo(f"           top-1 {accuracy}")
    for g in final["verify"]["gates"]:
        click.echo(f"  [{g['status']:>12}] {g['name']}: {g['message']}")
    for note in report["notes"]:
        click.echo(f"  note: {note}")
    click.echo(f"  artifact: {final['export']['artifact']}")
    click.echo(f"  report:   {report['files']['html']} (+ report.json, report.md)")


def _accuracy_line(comp: dict) -> str | None:
    """'0.9113 original -> 0.8727 compressed -> 0.9063 fine-tuned' (what is known of it)."""
    steps = [(comp.get("original_accuracy"), "original"), (comp.get("accuracy_before_finetune"), "compressed")]
    if comp.get("accuracy") is not None and comp.get("accuracy") != comp.get("accuracy_before_finetune"):
        steps.append((comp["accuracy"], "fine-tuned"))
    shown = [f"{value:.4f} {label}" for value, label in steps if value is not None]
    return " -> ".join(shown) if len(shown) > 1 else None


@click.command("export")
@click.argument("model", required=False)
@model_options
@device_options
@click.option("--target", default=None, help="Where to verify: local (a stand-in), ssh://user@host[:port], adb[://SERIAL]. Default: the profile's.")
@click.option("--data", "data_spec", default=None, help="Training/calibration data (compression gradients, fine-tuning, INT8).")
@click.option("--eval-data", default=None, help="Labelled data for accuracy on the target (default for the built-in model: fashion-mnist:test).")
@click.option("--method", type=click.Choice(METHODS), default="cobla", show_default=True)
@click.option("--scheme", type=click.Choice(SCHEMES), default="spatial", show_default=True, help="Conv decomposition scheme (spatial, channel, cp, tucker2, or auto: each conv takes whichever serves the budgets best; see `edgecomp compress --help`).")
@click.option("--cp-solver", type=click.Choice(CP_SOLVERS), default="als", show_default=True,
              help="--scheme cp: the CP fit at each layer's largest rank (exact ALS, or SPALS: sampled ALS).")
@click.option("--mac-budget", default=None, help="Override the device's MAC budget: a fraction (0.5, 50%) or absolute MACs (30M); a plain number above 1 is absolute; none = unconstrained.")
@click.option("--memory-budget", default=None, help="Override the device's memory budget (fraction or absolute; none = unconstrained).")
@click.option("--latency-budget-ms", type=POSITIVE, default=None, help="Latency budget; enables latency-driven rounds (default: the profile's).")
@click.option("--percentile", type=PERCENTILE, default=None, help="Latency percentile gated (default: the profile's).")
@click.option("--max-accuracy-drop", type=FRACTION, default=0.01, show_default=True, help="Allowed top-1 drop vs the original model.")
@click.option("--cost", type=click.Choice(["auto", "macs", "latency"]), default="auto", show_default=True,
              help="Compute cost the rank selection budgets: MACs, or a per-layer latency table measured on the "
                   "target. auto: latency when the device has a latency budget and the target is the device "
                   "itself (not a stand-in), else MACs; the report says which and why.")
@click.option("--no-cache", is_flag=True, help="Time every layer of the latency table afresh and refresh the "
              "per-user latency cache (see `edgecomp cache info`).")
@click.option("--layer-timing", type=click.Choice(["auto", "isolated", "in-context"]), default="auto",
              show_default=True, help="How the latency table times a factored layer: alone, or inside the whole "
              "model (catches layout changes and per-op overheads that timing alone misses; one whole-model "
              "timing per candidate). auto: in context when that takes under a minute (docs/latency.md).")
@click.option("--rank-multiple", type=COUNT, default=None, help=RANK_MULTIPLE_HELP)
@click.option("--max-rounds", type=COUNT, default=3, show_default=True, help="Latency-driven compress/verify rounds at most.")
@click.option("--finetune-epochs", type=NON_NEGATIVE, default=None,
              help=f"Fine-tune after compression (when --data is given). Default: {DEFAULT_FINETUNE_EPOCHS:g} "
                   f"({BUILTIN_QUICK['finetune_epochs']:g} for the built-in model).")
@click.option("--max-iter", type=COUNT, default=None,
              help=f"COBLA: maximum SQP iterations; {STOP_HELP}. Default: {_COBLA.max_iter} "
                   f"({BUILTIN_QUICK['cobla']['max_iter']} for the built-in model).")
@click.option("--sample", type=SampleAmount(), default=None,
              help=f"COBLA: fraction of the training data per gradient (or a count > 1). Default: {_COBLA.sample:g} "
                   f"({BUILTIN_QUICK['cobla']['sample']:g} for the built-in model).")
@click.option("--draws", type=COUNT, default=None,
              help=f"COBLA: randomized-rounding draws. Default: {_COBLA.draws} "
                   f"({BUILTIN_QUICK['cobla']['draws']} for the built-in model).")
@click.option("--time-budget", type=POSITIVE, default=None, help=TIME_BUDGET_HELP)
@click.option("--threads", type=COUNT, default=None, help=THREADS_HELP)
@click.option("--distill", is_flag=True, help="Fine-tune by distillation from the original model (no labels needed).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None, help="Default: the device's.")
@click.option("--calib-samples", type=COUNT, default=None,
              help="INT8: samples of --data that calibrate (as many again measure the INT8 model). Default: 256.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--warmup", type=NON_NEGATIVE, default=None, help="Verify: warm-up seconds.")
@click.option("--iterations", type=COUNT, default=None, help="Verify: timed iterations at least.")
@click.option("--min-duration", type=NON_NEGATIVE, default=None, help="Verify: timed seconds at least.")
@click.option("--cv-threshold", type=POSITIVE, default=None, help="Verify: robust CV (1.4826*MAD/median) above which a run is unstable and its latency bounds are widened (default: the harness's).")
@click.option("--allow-unstable", is_flag=True, help="Verify: do not widen an unstable run's latency bounds; only warn.")
@click.option("--force", is_flag=True, help="Redo every stage even if OUTDIR has it finished.")
@click.option("-o", "--output", "outdir", default="edgecomp-out", show_default=True, type=OutputPath("dir"))
@torch_options
@resume_options
@json_option
def command(model, weights, trust_pickle, input_shape, device, profile_file, target, data_spec, eval_data, method, scheme, cp_solver,
            mac_budget, memory_budget, latency_budget_ms, percentile, max_accuracy_drop, cost, no_cache, layer_timing, rank_multiple,
            max_rounds, finetune_epochs, max_iter, sample, draws, time_budget, threads, distill, precision, calib_samples, seed, warmup, iterations, min_duration, cv_threshold, allow_unstable, force, outdir,
            torch_device, amp, workers, checkpoint_every, resume, as_json):
    """Compress MODEL for a device, export its artifact, verify it on the target and report.

    \b
    Without MODEL: the built-in reference (a Fashion-MNIST CNN with shipped
    weights, trained by benchmarks/train_reference.py).
    Stages (reused on re-run unless --force): analyze, compress (skipped when
    the model already fits), export, verify, report (JSON, Markdown, HTML).
    Exit code: the verify gate's (0 within budget, 1 exceeded, 2 could not
    run, 3 inconclusive). COBLA's gradients, fine-tuning and evaluation run
    on --torch-device (--amp: mixed precision, not for COBLA); the exported
    model is built on the CPU. --checkpoint-every N / --resume: as for
    compress, per round's compression (docs/scale.md).
    """
    from edgecomp.pipeline import ExportRequest, run_export

    set_threads(threads)
    profile = resolve_profile(device, profile_file, required=True)
    measure = {k: v for k, v in (("warmup_s", warmup), ("iterations", iterations), ("min_duration_s", min_duration),
                                 ("cv_threshold", cv_threshold)) if v is not None}
    if allow_unstable:
        measure["unstable_policy"] = "warn"
    request = ExportRequest(
        profile=profile, outdir=outdir, model=model, weights=weights, trust_pickle=trust_pickle,
        input_shape=parse_input_shape(input_shape), target=target, data=data_spec, eval_data=eval_data, method=method,
        scheme=scheme, cp_solver=cp_solver, mac_budget=mac_budget, memory_budget=memory_budget, latency_budget_ms=latency_budget_ms,
        percentile=percentile, max_accuracy_drop=max_accuracy_drop, cost=cost, max_rounds=max_rounds,
        latency_cache=not no_cache, layer_timing=layer_timing, rank_multiple=rank_multiple,
        finetune_epochs=finetune_epochs, distill=distill,
        cobla={k: v for k, v in (("max_iter", max_iter), ("sample", sample), ("draws", draws),
                                 ("time_limit_s", time_budget)) if v is not None},
        seed=seed, force=force, precision=precision,
        calibration_samples=calib_samples, measure=measure,
        progress=progress_enabled() and not as_json,
        torch_device=torch_device, amp=amp, workers=workers, checkpoint_every=checkpoint_every, resume=resume,
    )
    report = run_export(request, log=lambda msg: click.echo(msg, err=True))
    emit(report, as_json, _human)
    click.get_current_context().exit(report["exit_code"])
