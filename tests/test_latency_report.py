"""`--cost auto`, `--no-cache` and the latency side of the export report (per-layer rows, predicted vs measured).

The report dicts reuse test_report_html's shapes of real runs, with a final round selected under latency.
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
import test_report_html as base
from test_report_html import Page, _compress, _export, _verify, _write

from edgecomp.cli import main
from edgecomp.errors import UserInputError
from edgecomp.pipeline.export import ExportRequest
from edgecomp.pipeline.rounds import choose_cost, min_latency_ms
from edgecomp.profiles import load_profile
from edgecomp.report.latency import cost_text, latency_markdown

LATENCY_LAYERS = [
    {"name": "features.0", "dense_ms": 0.05, "rank": None, "factored_ms": None, "latency_break_even_rank": 1,
     "chosen": "dense", "faster": None, "why": "never measurably faster factored: even rank 1 takes 0.06 ms"},
    {"name": "features.3", "dense_ms": 0.4, "rank": 16, "factored_ms": 0.12, "latency_break_even_rank": 90,
     "chosen": "factored", "faster": True, "why": "0.12 ms at rank 16 < 0.95 x 0.4 ms dense"},
]


def _request(device: str, target: str | None, **fields) -> SimpleNamespace:
    profile = load_profile(device)
    req = SimpleNamespace(profile=profile, target=target, cost="auto", latency_budget_ms=None, mac_budget=None,
                          method="cobla", scheme="spatial", **fields)
    req.target_url = lambda: target or ("local" if profile.target.transport == "local" else profile.target.url)
    return req


def test_auto_budgets_latency_only_on_the_real_device_with_a_latency_budget():
    on_host = choose_cost(_request("x86-host", "local"))
    assert on_host["cost"] == "latency" and "latency budget of 10 ms" in on_host["why"]
    assert choose_cost(_request("jetson", "ssh://nvidia@jetson.local"))["cost"] == "latency"

    stand_in = choose_cost(_request("jetson", "local"))
    assert stand_in["cost"] == "macs" and "stand-in" in stand_in["why"]
    host_latency = choose_cost(_with(_request("jetson", "local"), cost="latency"))
    assert host_latency["cost"] == "latency" and "the host's latency" in host_latency["why"]

    assert "no latency budget" in choose_cost(_with(_request("x86-host", "local"),
                                                    profile=_no_budget(load_profile("x86-host"))))["why"]
    assert choose_cost(_with(_request("x86-host", "local"), mac_budget="0.5"))["cost"] == "macs"
    assert choose_cost(_with(_request("x86-host", "local"), scheme="tucker2"))["cost"] == "macs"
    assert choose_cost(_with(_request("x86-host", "local"), method="lc"))["cost"] == "latency"  # LC's C steps take it
    assert choose_cost(_with(_request("x86-host", "local"), cost="macs")) == {"asked": "macs", "cost": "macs",
                                                                               "why": "--cost macs"}


def _with(req, **fields):
    for k, v in fields.items():
        setattr(req, k, v)
    return req


def _no_budget(profile):
    return replace(profile, latency_budget_ms=None)


def test_resolved_request_records_the_choice_and_refuses_unknown_costs():
    req = ExportRequest(profile=load_profile("x86-host"), outdir="o", model="zoo:tiny_cnn", target="local").resolved()
    assert req.cost == "latency" and req.cost_choice["asked"] == "auto"
    stand_in = ExportRequest(profile=load_profile("jetson"), outdir="o", model="zoo:tiny_cnn", target="local").resolved()
    assert stand_in.cost == "macs"
    with pytest.raises(UserInputError, match="auto, macs or latency"):
        ExportRequest(profile=load_profile("x86-host"), outdir="o", model="zoo:tiny_cnn", cost="flops").resolved()
    with pytest.raises(UserInputError, match="--rank-multiple"):
        ExportRequest(profile=load_profile("x86-host"), outdir="o", model="zoo:tiny_cnn", rank_multiple=0).resolved()


def test_min_latency_is_the_fixed_part_plus_each_layers_fastest_form():
    table = {"fixed_ms": 0.1, "layers": {
        "a": {"original_ms": 1.0, "intercept_ms": 0.2, "slope_ms": 0.1},  # rank 1: 0.3 ms
        "b": {"original_ms": 0.25, "intercept_ms": 0.3, "slope_ms": 0.1},  # slower factored: dense 0.25 ms
    }}
    assert min_latency_ms(table) == pytest.approx(0.1 + 0.3 + 0.25)


def test_export_cli_passes_no_cache_cost_and_rank_multiple(monkeypatch, tmp_path):
    seen = {}

    def fake_run_export(request, log=print):
        seen["request"] = request
        raise UserInputError("stop here")

    monkeypatch.setattr("edgecomp.pipeline.run_export", fake_run_export)
    args = ["export", "zoo:tiny_cnn", "--device", "x86-host", "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*args, "--no-cache", "--rank-multiple", "8"])
    assert result.exit_code == 2 and "stop here" in result.output
    req = seen["request"]
    assert (req.latency_cache, req.rank_multiple, req.cost) == (False, 8, "auto")
    CliRunner().invoke(main, args)
    assert seen["request"].latency_cache is True and seen["request"].rank_multiple is None
    assert CliRunner().invoke(main, [*args, "--rank-multiple", "0"]).exit_code == 2


def _latency_round(tmp_path, **compress):
    comp = {**_compress(tmp_path), "cost": "latency", "latency_layers": LATENCY_LAYERS, "predicted_latency_ms": 0.35,
            "rank_multiple": {"multiple": 8, "source": "--rank-multiple 8", "applied": True}, **compress}
    comp["layers"][1] = {**comp["layers"][1], "rank": 16, "rank_before_rounding": 20}
    return [{"round": 1, "mac_budget_override": None, "at_minimum": False, "compress": comp,
             "export": _export(tmp_path), "verify": _verify(tmp_path)}]


def test_report_renders_per_layer_latency_the_cost_choice_and_predicted_vs_measured(tmp_path, monkeypatch):
    why = "auto: x86-host has a latency budget of 10 ms and the target local is the device"
    request = base._req

    def latency_request(model="zoo:fmnist_cnn"):
        return replace(request(model), cost="latency", cost_choice={"asked": "auto", "cost": "latency", "why": why})

    monkeypatch.setattr(base, "_req", latency_request)
    report, out, text = _write(tmp_path, _latency_round(tmp_path))
    assert json.loads((out / "report.json").read_text())["cost_choice"]["why"] == why

    page = Page(text)
    rows = {row[0]: row for row in page.table("Per-layer latency")}
    assert rows["features.3"][1:4] == ["0.4 ms", "16 (from 20)", "0.12 ms"] and rows["features.3"][4] == "factored"
    assert rows["features.0"][2] == "-" and rows["features.0"][4] == "dense"
    assert why in text and "predicted" in text and "0.35 ms" in text and "0.389 ms" in text
    ranks = {row[0]: row for row in page.table("Per-layer ranks")}
    assert "rounded from 20" in " ".join(ranks["features.3"])

    markdown = (out / "report.md").read_text()
    assert f"Compute cost budgeted: latency ({why})." in markdown
    assert "| features.3 | 0.4 | 16 (from 20) | 0.12 | factored |" in markdown
    assert "predicted 0.35 ms by the per-layer fit, measured p50 0.389 ms" in markdown
    assert "rounded from 20" in markdown and "multiples of 8" in markdown


def test_a_macs_run_says_so_and_shows_no_latency_table(tmp_path):
    report = {"cost": "macs", "cost_choice": None,
              "final": {"compress": _compress(tmp_path), "verify": {"latency": {"p50": 1.0}}}}
    assert cost_text(report) == "macs"
    lines = latency_markdown(report)
    assert lines == ["", "Compute cost budgeted: macs."]  # no rows, no prediction, no rounding
