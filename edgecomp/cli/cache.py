"""`edgecomp cache`: the per-user cache of per-layer latency measurements (edgecomp.latency)."""

from __future__ import annotations

import click

from edgecomp.cli.common import emit, json_option


@click.group(name="cache")
def command():
    """Manage the per-user cache of per-layer latencies ($EDGECOMP_CACHE_DIR, $XDG_CACHE_HOME/edgecomp or
    ~/.cache/edgecomp): `edgecomp export` reuses its measurements on the same machine and runtime."""


@command.command("info")
@json_option
def info(as_json: bool):
    """Where the cache is, how many entries it holds and their size."""
    from edgecomp.latency import LatencyCache

    emit(LatencyCache().info(), as_json,
         lambda d: click.echo(f"{d['path']}: {d['entries']} entries, {d['size_bytes']:,} bytes"))


def _print_cleared(result: dict) -> None:
    click.echo(f"removed {result['removed']} entries from {result['path']}")
    if result["kept"]:
        click.echo(f"kept {len(result['kept'])} files edgecomp did not write there: {', '.join(result['kept'][:5])}"
                   + (" ..." if len(result["kept"]) > 5 else ""))


@command.command("clear")
@json_option
def clear(as_json: bool):
    """Delete every latency measurement in the cache (only the files edgecomp wrote there)."""
    from edgecomp.latency import LatencyCache

    emit(LatencyCache().clear(), as_json, _print_cleared)
