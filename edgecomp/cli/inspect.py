"""`edgecomp inspect`: per-layer costs, ranks and spectra of a model, and whether it fits a device."""

from __future__ import annotations

import click
import torch

from edgecomp.cli.common import device_options, emit, json_option, model_options, parse_input_shape, resolve_profile
from edgecomp.errors import UserInputError
from edgecomp.factor.schemes import check_finite, matricize
from edgecomp.graph.cost import BYTES_PER_PARAM, CHOICE_SCHEMES, SCHEMES, analyze_model


def _energy_summary(weight: torch.Tensor, scheme: str, keep: int, name: str = "") -> dict:
    check_finite(weight.detach(), f"layer {name!r} weight")
    sigma = torch.linalg.svdvals(matricize(weight.detach().float(), scheme)).double()
    energy = torch.cumsum(sigma**2, 0) / (sigma**2).sum().clamp_min(1e-300)
    return {
        "rank_90_energy": int(torch.searchsorted(energy, torch.tensor(0.90, dtype=energy.dtype)).item()) + 1,
        "energy_at_break_even": float(energy[min(keep, sigma.numel()) - 1]) if keep >= 1 else 0.0,
    }


def inspect_model(loaded, input_shape, scheme: str, precision: str, profile=None, spectra: bool = True) -> dict:
    """The inspect report as a dict (also used by other commands)."""
    module = loaded.module
    cost = analyze_model(module, input_shape, scheme)
    modules = dict(module.named_modules())
    layers = []
    for lc in cost.layers:
        info = lc.layer
        row = {
            "name": lc.name,
            "type": "Conv2d" if info.kind == "conv2d" else "Linear",
            "in_shape": list(info.in_shape),
            "out_shape": list(info.out_shape),
            "kernel": list(info.kernel_size),
            "stride": list(info.stride),
            "groups": info.groups,
            "macs": lc.macs,
            "params": lc.params,
            "decomposable": lc.decomposition is not None,
            "skip_reason": lc.skip_reason or None,
        }
        dec = lc.decomposition
        if dec is not None:
            row.update(
                scheme=dec.scheme,
                max_rank=dec.max_rank,
                break_even_rank=dec.break_even_rank,
                macs_per_rank=dec.macs_per_rank,
                params_per_rank=dec.params_per_rank,
            )
            if dec.scheme == "auto":
                row["schemes"] = [option.scheme for option in dec.options]
            if spectra and dec.scheme not in CHOICE_SCHEMES:  # Tucker-2 pairs / mixed choices have no one spectrum
                row.update(_energy_summary(modules[lc.name].weight, dec.scheme, dec.break_even_rank - 1, lc.name))
        layers.append(row)
    memory = cost.memory_bytes(precision)
    report = {
        "model": loaded.spec,
        "weights": loaded.weights,
        "input_shape": list(input_shape),
        "scheme": scheme,
        "precision": precision,
        "totals": {
            "macs": cost.total_macs,
            "params": cost.total_params,
            "memory_bytes": memory,
            "decomposable_layers": len(cost.decomposable),
            "skipped_layers": len(cost.skipped),
            "decomposable_macs": cost.total_macs - cost.fixed_macs,
            "decomposable_params": cost.total_params - cost.fixed_params,
        },
        "layers": layers,
        "device": None,
    }
    if profile is not None:
        budgets = profile.resolve_budgets(cost.total_macs, memory)
        report["device"] = {
            "name": profile.name,
            "mac_budget": budgets.macs,
            "mac_budget_source": budgets.mac_source,
            "memory_budget_bytes": budgets.memory_bytes,
            "memory_budget_source": budgets.memory_source,
            "fits_macs": cost.total_macs <= budgets.macs,
            "fits_memory": memory <= budgets.memory_bytes,
        }
        report["device"]["fits"] = report["device"]["fits_macs"] and report["device"]["fits_memory"]
    return report


def _human(report: dict) -> None:
    header = f"{'layer':32} {'type':6} {'out shape':>16} {'MACs':>12} {'params':>10} {'max r':>6} {'b-e r':>6} {'r@90%':>6}"
    click.echo(header)
    click.echo("-" * len(header))
    for row in report["layers"]:
        shape = "x".join(str(d) for d in row["out_shape"])
        ranks = (
            f"{row['max_rank']:>6} {row['break_even_rank']:>6} {row.get('rank_90_energy', ''):>6}"
            if row["decomposable"]
            else f"  skipped: {row['skip_reason']}"
        )
        click.echo(f"{row['name'][:32]:32} {row['type'][:6]:6} {shape:>16} {row['macs']:>12,} {row['params']:>10,} {ranks}")
    t = report["totals"]
    click.echo("-" * len(header))
    click.echo(
        f"total: {t['macs'] / 1e9:.3f} GMACs, {t['params'] / 1e6:.2f} M params, "
        f"{t['memory_bytes'] / 2**20:.2f} MiB at {report['precision']}; "
        f"{t['decomposable_layers']} decomposable layers ({t['skipped_layers']} left alone)"
    )
    dev = report["device"]
    if dev:
        verdict = "fits" if dev["fits"] else "does NOT fit"
        mem = "unlimited" if dev["memory_budget_bytes"] == float("inf") else f"{dev['memory_budget_bytes'] / 2**20:.2f} MiB"
        click.echo(
            f"device {dev['name']}: {verdict} (MAC budget {dev['mac_budget'] / 1e9:.3f} G [{dev['mac_budget_source']}], "
            f"memory budget {mem} [{dev['memory_budget_source']}])"
        )


@click.command("inspect")
@click.argument("model")
@model_options
@click.option("--scheme", type=click.Choice(SCHEMES), default="spatial", show_default=True, help="Decomposition scheme for Conv2d layers.")
@click.option("--precision", type=click.Choice(sorted(BYTES_PER_PARAM)), default=None, help="Bytes per parameter for memory (default: the device's, else fp32).")
@click.option("--no-spectrum", is_flag=True, help="Skip the SVDs (faster on huge layers).")
@device_options
@json_option
def command(model, weights, trust_pickle, input_shape, scheme, precision, no_spectrum, device, profile_file, as_json):
    """Per-layer table of MODEL: type, shapes, MACs, params, max rank, break-even rank, spectral
    energy; totals; and whether it meets a device's budgets (--device).

    MODEL is zoo:NAME, path/to/file.py:Factory or package.module:Factory.
    """
    from edgecomp.models import load_model

    profile = resolve_profile(device, profile_file)
    loaded = load_model(model, weights, trust_pickle=trust_pickle)
    shape = parse_input_shape(input_shape) or loaded.input_shape
    if shape is None:
        raise UserInputError("this model has no default input shape: pass --input-shape N,C,H,W")
    precision = precision or (profile.default_precision if profile else "fp32")
    emit(inspect_model(loaded, shape, scheme, precision, profile, spectra=not no_spectrum), as_json, _human)
