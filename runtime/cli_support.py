"""Click options and output shared by `edgecomp verify` and `edgecomp profile`."""

from __future__ import annotations

import click

from edgecomp.errors import UserInputError
from edgecomp.option_types import COUNT, NON_NEGATIVE, POSITIVE, SEED, FiniteFloat, OutputPath
from edgecomp.runtime.fleet import Board, FleetResult, board_latency, boards_from_targets, read_fleet_file
from edgecomp.runtime.harness import MeasureSettings, TargetOptions
from edgecomp.runtime.report import ProfileReport, VerifyResult
from edgecomp.runtime.stats import CV_THRESHOLD_CPU, CV_THRESHOLD_GPU


def _opts(func, specs):
    for spec in reversed(specs):
        func = spec(func)
    return func


_SPECS = [
    click.argument("artifact", metavar="ARTIFACT_OR_OUTDIR", type=click.Path()),
    click.option("--target", "targets", multiple=True,
                 help="local | ssh://[user@]host[:port] | adb[://SERIAL] (default: the profile's target; "
                      "'local' measures this machine as a labelled stand-in). Repeat it to measure a fleet: "
                      "every board at once, each reported on its own and in aggregate."),
    click.option("--fleet", "fleet_file", type=click.Path(dir_okay=False), default=None,
                 help="A YAML/JSON file listing boards (name, target, optional python, workdir, identity_file, "
                      "ssh_options) to measure at once; see docs/fleet.md. The target options below are "
                      "every board's defaults."),
    click.option("--data", "data_spec", default=None,
                 help="Inputs: a data spec (e.g. fashion-mnist:test); default random inputs of the model's shape."),
    click.option("--samples", type=COUNT, default=None,
                 help="Input samples to use (default 1000 from --data, 16 batches of random inputs)."),
    click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for sample choice / random inputs."),
    click.option("--batch-size", type=COUNT, default=1, show_default=True),
    click.option("--warmup", "warmup_s", type=NON_NEGATIVE, default=1.0, show_default=True, help="Warm-up seconds."),
    click.option("--iterations", type=COUNT, default=100, show_default=True,
                 help="Minimum timed inferences (raised automatically to bound a gated percentile)."),
    click.option("--min-duration", "min_duration_s", type=NON_NEGATIVE, default=1.0, show_default=True,
                 help="Minimum timed seconds; timing stops when both this and --iterations are reached."),
    click.option("--max-duration", "max_duration_s", type=POSITIVE, default=None,
                 help="Stop timing after this many seconds even if --iterations is not reached."),
    click.option("--confidence", type=FiniteFloat(min=0, max=1, min_open=True, max_open=True), default=0.99, show_default=True,
                 help="Confidence of the one-sided percentile bounds the latency gate uses."),
    click.option("--cv-threshold", type=POSITIVE, default=None,
                 help=f"Flag the run unstable above this robust CV, 1.4826*MAD/median (default "
                      f"{CV_THRESHOLD_CPU:g} CPU, {CV_THRESHOLD_GPU:g} GPU); an unstable run's latency bounds "
                      "are widened by the spread of the percentile over time blocks."),
    click.option("--allow-unstable", is_flag=True,
                 help="Do not widen an unstable run's latency bounds (they then assume i.i.d. samples); only warn."),
    click.option("--providers", default=None,
                 help="Comma-separated ONNX Runtime execution providers overriding the profile's (recorded)."),
    click.option("--reference", default=None, help="Reference model spec for accuracy/agreement (run on the host)."),
    click.option("--reference-weights", default=None, type=click.Path(dir_okay=False),
                 help="Weights for --reference."),
    click.option("--trust-code", is_flag=True,
                 help="Run the model code an output directory's recipe.json (or the ONNX metadata) names, as the "
                      "reference or to rebuild the model. Only for files you trust; --reference SPEC names it instead."),
    click.option("--compare", is_flag=True,
                 help="Compare outputs across PyTorch, ONNX Runtime and TensorRT (where available)."),
    click.option("--atol", type=NON_NEGATIVE, default=1e-4, show_default=True, help="Absolute tolerance for --compare."),
    click.option("--rtol", type=NON_NEGATIVE, default=1e-3, show_default=True, help="Relative tolerance for --compare."),
    click.option("--target-python", default=None, help="Interpreter on the target (default: the profile's)."),
    click.option("--workdir", default=None, help="Work directory on the target (default: the profile's)."),
    click.option("--ssh-option", "ssh_options", multiple=True,
                 help="Extra ssh option, e.g. StrictHostKeyChecking=accept-new (repeatable; passed as -o)."),
    click.option("--identity-file", default=None, help="SSH private key to use."),
    click.option("--timeout", "timeout_s", type=POSITIVE, default=None,
                 help="Wall-clock limit in seconds for the run on the target."),
    click.option("--report", "report_path", type=OutputPath("file"), default=None,
                 help="Write the JSON report here."),
    click.option("--markdown", "markdown_path", type=OutputPath("file"), default=None,
                 help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)."),
    click.option("--histogram", "histogram_path", type=OutputPath("file"), default=None,
                 help="Write a PNG latency histogram."),
]


def measurement_options(func):
    """ARTIFACT_OR_OUTDIR plus inputs, harness settings, target and report-file options."""
    return _opts(func, _SPECS)


def settings_from(kw: dict) -> MeasureSettings:
    return MeasureSettings(
        warmup_s=kw["warmup_s"],
        iterations=kw["iterations"],
        min_duration_s=kw["min_duration_s"],
        max_duration_s=kw["max_duration_s"],
        samples=kw["samples"],
        seed=kw["seed"],
        confidence=kw["confidence"],
        cv_threshold=kw["cv_threshold"],
        unstable_policy="warn" if kw["allow_unstable"] else "widen",
        timeout_s=kw["timeout_s"],
    )


def target_options_from(kw: dict) -> TargetOptions:
    return TargetOptions(
        python=kw["target_python"],
        workdir=kw["workdir"],
        ssh_options=tuple(x for opt in kw["ssh_options"] for x in ("-o", opt)),
        identity_file=kw["identity_file"],
    )


def target_from(kw: dict) -> str | None:
    """The one --target of a single-board run (None: the profile's)."""
    return kw["targets"][0] if kw["targets"] else None


def boards_from(kw: dict) -> list[Board] | None:
    """The fleet's boards (--fleet FILE, or --target given more than once); None for a single-board run,
    which keeps the single-target output."""
    if kw["fleet_file"] and kw["targets"]:
        raise UserInputError("give either --fleet FILE or --target URL(s), not both (list every board in the file)")
    if kw["fleet_file"]:
        return read_fleet_file(kw["fleet_file"], defaults=target_options_from(kw))
    if len(kw["targets"]) > 1:
        return boards_from_targets(kw["targets"], target_options_from(kw))
    return None


def providers_from(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise UserInputError("--providers needs at least one provider name")
    return names


def reference_from(kw: dict):
    from edgecomp.runtime.reference import ReferenceSpec

    if kw["reference"] is None:
        if kw["reference_weights"]:
            raise UserInputError("--reference-weights needs --reference")
        return None
    return ReferenceSpec(kw["reference"], kw["reference_weights"])


def echo_summary(result: VerifyResult | ProfileReport) -> None:
    """A short human summary on stdout."""
    report = result.report if isinstance(result, VerifyResult) else result
    s = report.latency
    if isinstance(result, VerifyResult):
        click.echo(f"verdict: {result.verdict} (exit {result.exit_code})")
        for g in result.gates:
            click.echo(f"  [{g.status}] {g.name}: {g.message}")
    click.echo(f"{report.context_line()}")
    click.echo(f"  latency ms: n={s.n} min {s.min:.4g} mean {s.mean:.4g} p50 {s.p50:.4g} p90 {s.p90:.4g} "
               f"p95 {s.p95:.4g} p99 {s.p99:.4g} max {s.max:.4g}  CV {s.cv:.3f} robust CV "
               f"{s.robust_cv:.3f}{' (UNSTABLE)' if s.unstable else ''}  throughput {s.throughput_per_s:.4g}/s")
    if report.accuracy and report.accuracy.get("top1") is None:
        click.echo(f"  accuracy: metric {report.accuracy['metric']:.6g} on {report.accuracy['samples']} samples")
    elif report.accuracy:
        top5 = report.accuracy.get("top5")
        click.echo(f"  accuracy: top-1 {report.accuracy['top1']:.4f}"
                   + (f" top-5 {top5:.4f}" if top5 is not None else "") + f" on {report.accuracy['samples']} samples")
    if report.agreement:
        click.echo(f"  agreement with reference: top-1 {report.agreement['top1_agreement']:.4f}, "
                   f"max |err| {report.agreement['max_abs_error']:.3g}")
    for note in report.notes:
        click.echo(f"  note: {note}")


def echo_fleet_summary(fleet: FleetResult) -> None:
    """One line per board and the aggregate, on stdout."""
    agg = fleet.aggregate()
    click.echo(f"fleet {fleet.command} on {len(fleet.boards)} boards ({fleet.device}): {fleet.verdict} "
               f"(exit {fleet.exit_code})")
    for b in fleet.boards:
        row = board_latency(b, fleet.percentile)
        if b.error is not None:
            click.echo(f"  [{b.verdict}] {b.board.name}: could not run: {b.error}")
            continue
        bound = "" if row is None else (f": p{fleet.percentile:g} {row['estimate_ms']:.4g} ms, upper bound "
                                        f"{row['upper_bound_ms']:.4g} ms")
        where = "" if b.board.target == b.board.name else f" ({b.board.target})"
        click.echo(f"  [{b.verdict}] {b.board.name}{where}{bound}")
        if isinstance(b.result, VerifyResult):
            for g in b.result.gates:
                click.echo(f"      [{g.status}] {g.name}: {g.message}")
    worst = agg["worst_latency"]
    if worst is not None:
        click.echo(f"worst p{fleet.percentile:g}: {worst['board']} at {worst['estimate_ms']:.4g} ms "
                   f"(upper bound {worst['upper_bound_ms']:.4g} ms)")
    click.echo(f"{agg['passed']} passed, {agg['failed']} failed, {agg['inconclusive']} inconclusive, "
               f"{agg['could_not_run']} could not run")
