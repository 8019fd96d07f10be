"""`edgecomp profile`: measure an artifact on the device (latency statistics, accuracy, memory)
without gating; the same report as `edgecomp verify`."""

from __future__ import annotations

import click

from edgecomp.cli.common import PERCENTILE, device_options, emit, json_option, resolve_profile
from edgecomp.runtime.cli_support import (boards_from, echo_fleet_summary, echo_summary, measurement_options,
                                          providers_from, reference_from, settings_from, target_from,
                                          target_options_from)


@click.command("profile")
@measurement_options
@device_options
@click.option("--percentile", type=PERCENTILE, default=None,
              help="Run enough iterations to bound this percentile (in percent; MLPerf minimum: 64 for p90, "
                   "662 for p99).")
@json_option
def command(as_json, **kw):
    """Measure ARTIFACT_OR_OUTDIR (.onnx/.ort, TensorRT .engine/.plan, or a compress output directory)
    on the device: latency statistics with confidence intervals, accuracy with --data, memory. With
    --target repeated or --fleet FILE, every board is measured at once (exit 2 if any could not run)."""
    from edgecomp.runtime import profile_artifact
    from edgecomp.runtime.fleet import profile_fleet
    from edgecomp.runtime.reports import write_reports
    from edgecomp.runtime.reports.fleet import write_fleet_reports

    profile = resolve_profile(kw["device"], kw["profile_file"], required=True)
    boards = boards_from(kw)
    options = dict(
        data_spec=kw["data_spec"],
        batch_size=kw["batch_size"],
        percentile=kw["percentile"],
        settings=settings_from(kw),
        providers=providers_from(kw["providers"]),
        reference=reference_from(kw),
        compare=kw["compare"],
        trust_code=kw["trust_code"],
        atol=kw["atol"],
        rtol=kw["rtol"],
    )
    paths = dict(json_path=kw["report_path"], markdown_path=kw["markdown_path"], histogram_path=kw["histogram_path"])
    if boards is None:
        report = profile_artifact(kw["artifact"], profile, target=target_from(kw),
                                  target_options=target_options_from(kw), **options)
        write_reports(report, **paths)
        emit(report.to_dict(), as_json, lambda _: echo_summary(report))
        return
    fleet = profile_fleet(kw["artifact"], profile, boards, **options)
    write_fleet_reports(fleet, **paths)
    emit(fleet.to_dict(), as_json, lambda _: echo_fleet_summary(fleet))
    click.get_current_context().exit(fleet.exit_code)
