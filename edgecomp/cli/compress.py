"""`edgecomp compress`: choose per-layer ranks under the device budgets and build the factored model."""

from __future__ import annotations

import click

from edgecomp.cli.common import (COUNT, NON_NEGATIVE, POSITIVE, SEED, OutputPath, SampleAmount, device_options, emit,
                                 json_option, model_options, parse_input_shape, progress_enabled, resolve_profile,
                                 resume_options, torch_options)
from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import METHODS
from edgecomp.factor.schemes import CP_SOLVERS
from edgecomp.graph.cost import BYTES_PER_PARAM, SCHEMES

_COBLA = CoblaOptions()
STOP_HELP = (f"it stops earlier once every layer's expected rank has moved by at most {_COBLA.stable_tol:g} for "
             f"{_COBLA.stable_iters} iterations in a row")
THREADS_HELP = "Torch CPU threads for this run (torch.set_num_threads); default: torch's own choice."
RANK_MULTIPLE_HELP = ("Round each factored rank down to a multiple of N once the ranks are chosen (budgets still "
                      "hold; a rank below N is kept). Default: the device profile's runtime.rank_multiple at the "
                      "precision; 1 = no rounding.")
TIME_BUDGET_HELP = ("COBLA: wall-clock budget in seconds for the rank selection (SQP and rounding); when it runs "
                    "out, the best feasible ranks found so far are used and the report says so.")


def _budget(value: float) -> str:
    return "none" if value == float("inf") else f"{value:,.0f}"


def _human(report: dict) -> None:
    click.echo(f"{report['method']}/{report['scheme']} on {report['model']}")
    click.echo(
        f"  MACs   {report['original_macs']:>14,} -> {report['macs']:>14,}  ({report['mac_ratio']:.3f}x; budget {_budget(report['mac_budget'])})"
    )
    click.echo(
        f"  params {report['original_params']:>14,} -> {report['params']:>14,}  ({report['param_ratio']:.3f}x; budget {_budget(report['param_budget'])})"
    )
    if report["accuracy"] is not None:
        tuned = report.get("finetune")
        before = report.get("accuracy_before_finetune")
        if tuned:
            click.echo(f"  top-1  {report['original_accuracy']:.4f} -> {before:.4f} compressed -> {report['accuracy']:.4f} "
                       f"after {tuned['mode']} fine-tuning ({tuned['epochs']:g} epochs)")
        else:
            click.echo(f"  top-1  {report['original_accuracy']:.4f} -> {report['accuracy']:.4f} (before fine-tuning)")
    budget = report.get("time_budget") or {}
    if budget.get("hit"):
        click.echo(f"  note: {budget['message']}")
    factored = sum(1 for row in report["layers"] if row["factored"])
    click.echo(f"  {factored}/{len(report['layers'])} decomposable layers factored; within budgets: {report['within_budgets']}")
    onnx = ", model.onnx" if (report.get("onnx") or {}).get("written") else ""
    click.echo(f"  wrote {report['outdir']} (model.safetensors{onnx}, recipe.json, report.json, ranks.png)")


@click.command("compress")
@click.argument("model")
@model_options
@device_options
@click.option("--mac-budget", default=None, help="MAC budget: a fraction of the original (0.5, 50%) or absolute MACs (30M, 1.2G); a plain number above 1 is absolute (1.5 = 1.5 MACs); none = unconstrained. Overrides the device's.")
@click.option("--memory-budget", default=None, help="Parameter-memory budget: a fraction (0.5, 50%) or absolute (2MB, 512KiB); a plain number above 1 is bytes; none = unconstrained. Overrides the device's.")
@click.option("--precision", type=click.Choice(sorted(BYTES_PER_PARAM)), default=None, help="Bytes per parameter for the memory budget (default: the device's).")
@click.option("--method", type=click.Choice(METHODS), default="cobla", show_default=True, help="Rank-selection method.")
@click.option("--scheme", type=click.Choice(SCHEMES), default="spatial", show_default=True, help="Conv decomposition scheme (spatial: kx1 then 1xk; channel: kxk then 1x1; cp: four convs from a CP fit of the kernel; tucker2: 1x1, kh x kw core, 1x1 at ranks (r1, r2); auto: each conv takes whichever of these serves the budgets best. tucker2 and auto take every budgeted method (cobla: a Fisher-scored exact knapsack); 1x1 convs and Linear layers use an SVD).")
@click.option("--cp-solver", type=click.Choice(CP_SOLVERS), default="als", show_default=True, help="--scheme cp: the CP fit at each layer's largest rank (exact ALS, or SPALS: sampled ALS).")
@click.option("--rank-multiple", type=COUNT, default=None, help=RANK_MULTIPLE_HELP)
@click.option("--data", "data_spec", default=None, help="Training data for COBLA's gradients: fashion-mnist[:train], npz:FILE, imagefolder:DIR, module:callable.")
@click.option("--eval-data", default=None, help="Data to report top-1 accuracy on (e.g. fashion-mnist:test).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--sample", type=SampleAmount(), default=0.05, show_default=True, help="COBLA: fraction of the training data per gradient (or a count > 1); 1 = full batch.")
@click.option("--max-iter", type=COUNT, default=_COBLA.max_iter, show_default=True, help=f"COBLA: maximum SQP iterations; {STOP_HELP}.")
@click.option("--draws", type=COUNT, default=_COBLA.draws, show_default=True,
              help=f"COBLA: randomized-rounding draws; each distinct one is scored on {_COBLA.screen} held-out training "
                   f"samples, the best {_COBLA.finalists} on the whole held-out set.")
@click.option("--time-budget", type=POSITIVE, default=None, help=TIME_BUDGET_HELP)
@click.option("--threads", type=COUNT, default=None, help=THREADS_HELP)
@click.option("--no-shrink", is_flag=True, help="COBLA: do not fix the masks every heuristic agrees on.")
@click.option("--finetune-epochs", type=NON_NEGATIVE, default=0.0, show_default=True, help="Fine-tune the compressed model for N epochs of --data (fractions allowed).")
@click.option("--finetune-lr", type=POSITIVE, default=0.01, show_default=True, help="Fine-tuning learning rate (SGD, cosine schedule).")
@click.option("--distill", is_flag=True, help="Fine-tune by distillation from the original model (needs no labels).")
@click.option("--ranks-from", type=click.Choice([m for m in METHODS if m not in ("lc", "vbmf", "gavish-donoho")]), default=None,
              help="LC: fix the ranks with this method (default: choose them in every C step under the budgets).")
@click.option("--lc-n-mu", type=COUNT, default=None, help="LC: number of mu values (default in edgecomp.lc).")
@click.option("--lc-steps-per-mu", type=COUNT, default=None, help="LC: SGD steps per L step (default in edgecomp.lc).")
@click.option("-o", "--output", "outdir", required=True, type=OutputPath("dir"), help="Output directory.")
@torch_options
@resume_options
@json_option
def command(model, weights, trust_pickle, input_shape, device, profile_file, mac_budget, memory_budget, precision,
            method, scheme, cp_solver, rank_multiple, data_spec, eval_data, seed, sample, max_iter, draws, time_budget, threads, no_shrink,
            finetune_epochs, finetune_lr, distill, ranks_from, lc_n_mu, lc_steps_per_mu, outdir, torch_device, amp,
            workers, checkpoint_every, resume, as_json):
    """Compress MODEL under a device's MAC and memory budgets, then optionally fine-tune.

    \b
    --method cobla (default) needs --data for its gradients; lc needs --data
    for its L steps (ranks from --ranks-from or chosen under the budgets).

    \b
    Writes OUTDIR/model.safetensors + recipe.json (rebuildable without pickle),
    report.json and ranks.png. Exit code 2 when the budget is infeasible
    (the message says the minimum achievable MACs/memory).

    \b
    Fine-tuning, LC and evaluation run on --torch-device (--amp for mixed
    precision); --checkpoint-every N saves their progress beside OUTDIR and
    --resume continues a killed run from it (docs/scale.md).
    """
    from edgecomp.compression.methods import LCOptions
    from edgecomp.compression.run import CompressRequest, run_compress

    set_threads(threads)
    profile = resolve_profile(device, profile_file)
    request = CompressRequest(
        model=model, outdir=outdir, weights=weights, trust_pickle=trust_pickle, input_shape=parse_input_shape(input_shape),
        profile=profile, mac_budget=mac_budget, memory_budget=memory_budget, precision=precision, method=method,
        scheme=scheme, cp_solver=cp_solver, rank_multiple=rank_multiple, data=data_spec, eval_data=eval_data, seed=seed,
        cobla=CoblaOptions(max_iter=max_iter, sample=sample, draws=draws, shrink=not no_shrink, seed=seed,
                           time_limit_s=time_budget),
        lc=LCOptions(ranks_from=ranks_from, n_mu=lc_n_mu, steps_per_mu=lc_steps_per_mu, seed=seed,
                     progress=progress_enabled() and not as_json),
        finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, distill=distill,
        progress=progress_enabled() and not as_json,
        torch_device=torch_device, amp=amp, workers=workers, checkpoint_every=checkpoint_every, resume=resume,
    )
    report = run_compress(request, log=lambda msg: click.echo(msg, err=True))
    emit(report, as_json, _human)


def set_threads(threads: int | None) -> None:
    """--threads: the CLI's choice of torch CPU threads (the library never sets them: notebooks and
    multi-process runs choose their own)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
