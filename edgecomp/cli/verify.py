"""`edgecomp verify`: measure an artifact on the device and gate on latency and accuracy budgets.

Exit codes: 0 within budget, 1 budget exceeded, 2 could not run, 3 inconclusive (too noisy to
decide). The latency gate compares the one-sided upper confidence bound of the percentile (not the
point estimate) with the budget.
"""

from __future__ import annotations

import click

from edgecomp.cli.common import FRACTION, PERCENTILE, POSITIVE, OutputPath, device_options, emit, json_option, resolve_profile
from edgecomp.errors import EdgecompError
from edgecomp.runtime.cli_support import (boards_from, echo_fleet_summary, echo_summary, measurement_options,
                                          providers_from, reference_from, settings_from, target_from,
                                          target_options_from)


@click.command("verify")
@measurement_options
@device_options
@click.option("--latency-budget-ms", type=POSITIVE, default=None,
              help="Latency budget in ms (default: the device profile's).")
@click.option("--percentile", type=PERCENTILE, default=None,
              help="Percentile the budget applies to, in percent (default: the profile's, usually 90).")
@click.option("--max-accuracy-drop", type=FRACTION, default=0.01, show_default=True,
              help="Largest allowed top-1 accuracy drop vs the reference (a fraction; needs --data).")
@click.option("--junit", "junit_path", type=OutputPath("file"), default=None,
              help="Write JUnit XML (one testcase per gate).")
@json_option
def command(as_json, **kw):
    """Measure ARTIFACT_OR_OUTDIR (.onnx/.ort, TensorRT .engine/.plan, or a compress output directory)
    on the device and gate it on the latency budget and the accuracy drop. With --target repeated or
    --fleet FILE, every board is measured at once and gated on its own.

    \b
    Exit codes: 0 within budget, 1 budget exceeded, 2 could not run,
                3 inconclusive (too noisy to decide: run longer or on a quieter machine).
    Fleet: 1 if any board fails, else 2 if any could not run, else 3 if any is inconclusive, else 0.
    """
    from edgecomp.runtime import verify
    from edgecomp.runtime.fleet import verify_fleet
    from edgecomp.runtime.reports import write_error_reports, write_reports
    from edgecomp.runtime.reports.fleet import write_fleet_reports

    profile = None
    try:
        profile = resolve_profile(kw["device"], kw["profile_file"], required=True)
        boards = boards_from(kw)
        options = dict(
            data_spec=kw["data_spec"],
            batch_size=kw["batch_size"],
            latency_budget_ms=kw["latency_budget_ms"],
            percentile=kw["percentile"],
            max_accuracy_drop=kw["max_accuracy_drop"],
            reference=reference_from(kw),
            settings=settings_from(kw),
            providers=providers_from(kw["providers"]),
            compare=kw["compare"],
            trust_code=kw["trust_code"],
            atol=kw["atol"],
            rtol=kw["rtol"],
        )
        if boards is None:
            result = verify(kw["artifact"], profile, target=target_from(kw), target_options=target_options_from(kw),
                            **options)
        else:
            result = verify_fleet(kw["artifact"], profile, boards, **options)
    except EdgecompError as exc:
        # CI still gets files saying the run could not happen (exit code 2 comes from the CLI group)
        write_error_reports(str(exc), device=getattr(profile, "name", None), markdown_path=kw["markdown_path"],
                            junit_path=kw["junit_path"], json_path=kw["report_path"])
        raise
    paths = dict(json_path=kw["report_path"], markdown_path=kw["markdown_path"], junit_path=kw["junit_path"],
                 histogram_path=kw["histogram_path"])
    if boards is None:
        write_reports(result, **paths)
        emit(result.to_dict(), as_json, lambda _: echo_summary(result))
    else:
        write_fleet_reports(result, **paths)
        emit(result.to_dict(), as_json, lambda _: echo_fleet_summary(result))
    click.get_current_context().exit(result.exit_code)
