"""`edgecomp devices`: list the device profiles, or show one with its derived numbers."""

from __future__ import annotations

import click

from edgecomp.cli.common import emit, json_option
from edgecomp.profiles import DeviceProfile, format_bytes, format_count, list_profiles, load_profile
from edgecomp.profiles.schema import display_path
from edgecomp.profiles.units import format_sci


def _mac_budget_text(profile: DeviceProfile) -> str:
    if profile.mac_budget is not None:
        return format_count(profile.mac_budget)
    derived = profile.derived_mac_budget()
    return "-" if derived is None else f"~{format_count(derived)} (latency)"


def _latency_text(profile: DeviceProfile) -> str:
    if profile.latency_budget_ms is None:
        return "-"
    return f"{profile.latency_budget_ms:g} ms p{profile.latency_percentile:g}"


def summary(profile: DeviceProfile) -> dict:
    """One row of `edgecomp devices --json`."""
    return {
        "name": profile.name,
        "aliases": list(profile.aliases),
        "runtime": profile.runtime,
        "default_precision": profile.default_precision,
        "latency_budget_ms": profile.latency_budget_ms,
        "latency_percentile": profile.latency_percentile,
        "mac_budget": profile.mac_budget,
        "derived_mac_budget": profile.derived_mac_budget(),
        "memory_budget_bytes": profile.memory_budget_bytes,
        "transport": profile.target.transport,
        "source": profile.source,
    }


def details(profile: DeviceProfile) -> dict:
    """`edgecomp devices show NAME --json`: the profile plus its derived numbers."""
    return {
        **profile.to_dict(),
        "source": profile.source,
        "effective_macs_per_s": {p: profile.effective_macs_per_s(p) for p in profile.precisions},
        "derived_mac_budget": profile.derived_mac_budget(),
        "bytes_per_param": profile.bytes_per_param(),
    }


def _print_table(profiles: list[DeviceProfile]) -> None:
    header = ("NAME", "ALIASES", "RUNTIME", "PRECISION", "LATENCY", "MAC BUDGET", "MEMORY", "TRANSPORT")
    rows = [
        (
            p.name,
            ", ".join(p.aliases) or "-",
            p.runtime,
            p.default_precision,
            _latency_text(p),
            _mac_budget_text(p),
            format_bytes(p.memory_budget_bytes),
            p.target.transport,
        )
        for p in profiles
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _print_details(profile: DeviceProfile) -> None:
    precision = profile.default_precision
    lines = [
        ("name", profile.name),
        ("aliases", ", ".join(profile.aliases) or "-"),
        ("description", profile.description or "-"),
        ("source", display_path(profile.source) if profile.source else "-"),
        ("runtime", profile.runtime),
        ("execution providers", ", ".join(profile.execution_providers) or "-"),
        ("threads", "runtime default" if profile.threads is None else str(profile.threads)),
        ("graph optimization", profile.graph_optimization_level),
        ("precisions", ", ".join(p + (" (default)" if p == precision else "") for p in profile.precisions)),
    ]
    for p in profile.precisions:
        lines.append(
            (
                f"MAC/s {p}",
                f"peak {format_sci(profile.peak_macs_per_s[p])}, effective {format_sci(profile.effective_macs_per_s(p))}"
                f" (x{profile.efficiency:g})",
            )
        )
    lines.append(("latency budget", _latency_text(profile)))
    if profile.mac_budget is not None:
        mac_text = f"{format_count(profile.mac_budget)} MACs (profile)"
    elif profile.latency_budget_ms is not None:
        mac_text = (
            f"{format_count(profile.derived_mac_budget())} MACs = {profile.latency_budget_ms:g} ms x "
            f"{format_sci(profile.effective_macs_per_s())} MAC/s ({precision})"
        )
    else:
        mac_text = "none"
    lines.append(("MAC budget", mac_text))
    lines.append(("memory budget", format_bytes(profile.memory_budget_bytes) if profile.memory_budget_bytes else "none"))
    target = profile.target
    lines.append(("target", f"{target.transport}" + (f" {target.url}" if target.url else "")))
    lines.append(("target python", target.python))
    lines.append(("target workdir", target.workdir))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")


@click.group(name="devices", invoke_without_command=True)
@json_option
@click.pass_context
def command(ctx: click.Context, as_json: bool):
    """List the device profiles (built-in ones live in device_profiles/, or $EDGECOMP_PROFILES_DIR)."""
    if ctx.invoked_subcommand is not None:
        return
    profiles = list_profiles()
    emit([summary(p) for p in profiles], as_json, lambda _: _print_table(profiles))


@command.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool):
    """Show one device profile (NAME, alias or path to a .yaml) with its effective MAC rate and budgets."""
    profile = load_profile(name)
    emit(details(profile), as_json, lambda _: _print_details(profile))
