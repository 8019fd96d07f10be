"""In-context layer timings (edgecomp.pipeline.layer_timing), their noise margin, hardware-friendly rank grids
and the detected SIMD width (runtime.rank_multiple: simd)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgecomp.latency import LatencyCache
from edgecomp.pipeline import layer_timing as ctx


def test_group_timings_cancel_drift_between_rounds():
    """Every round runs k times slower than the last: the per-round ratios, and so the result, do not move."""
    true = {"original": 1.0, "a": 0.8, "b": 1.3}
    calls = []

    def time_model(name):
        calls.append(name)
        return true[name] * (1 + (len(calls) - 1) // 3)  # a slowdown that grows with each round

    times, ratios = ctx.group_timings(time_model, list(true), rounds=5)
    assert len(calls) == 15 and calls[:3] == ["original", "a", "b"] and calls[3:6] == ["a", "b", "original"]
    assert ratios["a"] == pytest.approx([0.8] * 5) and ratios["b"] == pytest.approx([1.3] * 5)
    assert times["a"] / times["original"] == pytest.approx(0.8) and times["b"] / times["original"] == pytest.approx(1.3)


def test_the_noise_margin_is_zero_without_noise_and_grows_with_the_spread():
    assert ctx.noise_margin_ms(1.0, [[0.9] * 5, [1.1] * 5]) == 0.0
    small = ctx.noise_margin_ms(1.0, [[0.88, 0.9, 0.92, 0.89, 0.91], [1.08, 1.1, 1.12, 1.09, 1.11]])
    large = ctx.noise_margin_ms(1.0, [[0.7, 0.9, 1.1, 0.8, 1.0], [0.9, 1.1, 1.3, 1.0, 1.2]])
    assert 0 < small < large
    assert ctx.noise_margin_ms(2.0, [[0.7, 0.9, 1.1, 0.8, 1.0]]) == pytest.approx(2 * ctx.noise_margin_ms(1.0, [[0.7, 0.9, 1.1, 0.8, 1.0]]))


def test_auto_times_in_context_only_when_that_is_cheap():
    cheap = ctx.choose_layer_timing("auto", call_s=0.3, calls=100)
    assert cheap["mode"] == "in-context" and "30 s" in cheap["why"]
    dear = ctx.choose_layer_timing("auto", call_s=2.0, calls=400)
    assert dear["mode"] == "isolated" and "--layer-timing in-context" in dear["why"]
    assert ctx.choose_layer_timing("in-context", 2.0, 400)["mode"] == "in-context"
    assert ctx.choose_layer_timing("isolated", 0.01, 1)["mode"] == "isolated"
    with pytest.raises(ValueError):
        ctx.choose_layer_timing("fast", 0.1, 1)


def test_the_architecture_digest_changes_with_the_graph_or_input_not_the_weights(tmp_path):
    import torch
    from torch import nn

    from edgecomp.exporters import export_onnx

    class Residual(nn.Module):  # the same repr as a plain Sequential of its conv: only forward differs
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    class Plain(Residual):
        def forward(self, x):
            return self.conv(x)

    Plain.__name__ = "Residual"

    def digest(module, shape, stem):
        return ctx.architecture_digest(export_onnx(module.eval(), tmp_path / f"{stem}.onnx", shape).path)

    torch.manual_seed(0)
    a = digest(Residual(), (1, 3, 8, 8), "a")
    assert digest(Residual(), (1, 3, 8, 8), "b") == a  # other weights
    assert digest(Residual(), (1, 3, 16, 16), "c") != a
    assert repr(Plain()) == repr(Residual()) and digest(Plain(), (1, 3, 8, 8), "d") != a


def test_an_in_context_key_names_its_rank_grid():
    shape = {"kind": "conv"}
    assert ctx.in_context_shape(shape, "d", "conv2", [1, 16, 32]) != ctx.in_context_shape(shape, "d", "conv2", [1, 8, 16])


def _facts():
    return {"runtime": "onnxruntime", "runtime_version": "test", "providers": ["CPUExecutionProvider"],
            "graph_optimization_level": "all", "precision": "fp32", "threads": 1, "batch": 1, "environment": {}}


def test_an_in_context_table_reads_each_layer_inside_the_whole_model_and_reuses_the_cache(tmp_path):
    """A fake target where factoring conv2 at rank r costs the whole model 0.01 r - 0.05 ms, whatever the
    layer costs alone: the row keeps conv2's dense time and adds exactly that difference."""
    from edgecomp.models import load_model
    from edgecomp.pipeline.latency_table import Timed, measure_latency_table

    loaded = load_model("zoo:tiny_cnn", None)
    analysis = {"input_shape": list(loaded.input_shape)}
    calls = []

    def timer(path: Path):
        calls.append(path.name)
        match = re.fullmatch(r"ctx\.conv2\.r(\d+)\.onnx", path.name)
        if match:
            return Timed(1.0 + 0.01 * int(match.group(1)) - 0.05, _facts())
        if path.name.startswith("ctx.") or path.name == "model.onnx":
            return Timed(1.0, _facts())
        return Timed(0.2 if path.name.endswith(".orig.onnx") else 0.1, _facts())  # alone: always faster

    def table(folder, **kw):
        calls.clear()
        return measure_latency_table(SimpleNamespace(scheme="spatial", target_url=lambda: "local"), analysis,
                                     tmp_path / folder, lambda m: None, loaded=loaded, providers=None, timer=timer,
                                     cache=LatencyCache(tmp_path / "cache"), layer_timing="in-context", **kw)

    first = table("a")
    assert first["layer_timing"]["mode"] == "in-context"
    row = first["layers"]["conv2"]
    assert row["original_ms"] == pytest.approx(0.2)
    assert row["latency_ms"] == pytest.approx([0.2 + 0.01 * r - 0.05 for r in row["ranks"]])
    assert row["margin_ms"] == pytest.approx(ctx.MIN_MARGIN_MS) and row["in_context"]["model_ms"] == pytest.approx(1.0)
    assert row["latency_break_even_rank"] <= 6  # alone it looked faster at every rank; in context only below ~5
    timed_ctx = [c for c in calls if c.startswith("ctx.conv2.")]
    assert len(timed_ctx) == ctx.ROUNDS * len(row["ranks"])  # and the whole model once per round (model.onnx)

    again = table("b")
    assert calls == ["model.onnx"] and again["layers"] == first["layers"] and again["cache"]["misses"] == 0
    isolated = measure_latency_table(SimpleNamespace(scheme="spatial", target_url=lambda: "local"), analysis,
                                     tmp_path / "c", lambda m: None, loaded=loaded, providers=None, timer=timer,
                                     cache=LatencyCache(tmp_path / "cache"), layer_timing="isolated")
    assert isolated["layers"]["conv2"]["latency_ms"] == pytest.approx([0.1] * len(row["ranks"]))  # own entries


def test_the_rank_grid_is_aligned_to_the_rank_multiple():
    from edgecomp.pipeline.latency_table import rank_grid

    assert rank_grid(64, 96) == [1, 22, 42, 63]
    assert rank_grid(64, 96, multiple=16) == [1, 16, 32, 48]
    assert rank_grid(3, 3, multiple=16) == [1, 2]  # ranks below the multiple are kept, as built


def test_a_noise_margin_lowers_the_latency_break_even_rank():
    from edgecomp.ranks.latency import latency_break_even_rank, layer_latency_rows, not_faster_ms

    row = {"original_ms": 1.0, "intercept_ms": 0.0, "slope_ms": 0.01, "ranks": [1, 50], "max_rank": 200}
    assert not_faster_ms(row) == pytest.approx(0.95) and latency_break_even_rank(row, 200) == 95
    noisy = {**row, "margin_ms": 0.2}
    assert not_faster_ms(noisy) == pytest.approx(0.8) and latency_break_even_rank(noisy, 200) == 80
    why = layer_latency_rows({"layers": {"conv": noisy}}, {"conv": 90})[0]["why"]
    assert "not measurably faster" in why and "timing noise" in why


@pytest.mark.parametrize("flags, lanes", [("fpu sse2 avx avx2 avx512f", 16), ("fpu sse2 avx avx2", 8),
                                          ("fp asimd evtstrm", 4), ("fpu sse2", 4)])
def test_host_simd_lanes_reads_the_cpu_flags(tmp_path, flags, lanes):
    from edgecomp.latency.keys import host_simd_lanes

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test cpu\nflags\t\t: {flags}\n\n")
    assert host_simd_lanes(str(cpuinfo))[0] == lanes


def test_a_profile_rank_multiple_of_simd_is_this_hosts_width_and_says_so():
    from edgecomp.factor.rank_rounding import resolve_rank_multiple
    from edgecomp.latency.keys import host_simd_lanes
    from edgecomp.profiles import load_profile

    host = load_profile("x86-host")
    lanes, isa = host_simd_lanes()
    assert host.rank_multiple("fp32") == lanes and host.rank_multiple("int8") == 1
    multiple, source = resolve_rank_multiple(None, host, "fp32")
    assert multiple == lanes and (lanes == 1 or f"simd = {lanes} fp32 lanes ({isa} on this host)" in source)
    assert resolve_rank_multiple(1, host, "fp32") == (1, "--rank-multiple 1")


def test_simd_is_refused_for_a_board_reached_over_ssh(tmp_path):
    from edgecomp.errors import UserInputError
    from edgecomp.profiles import load_profile

    text = (Path(__file__).resolve().parents[1] / "device_profiles" / "raspberry-pi-5.yaml").read_text()
    text = text.replace("runtime:\n", "runtime:\n  rank_multiple: simd\n", 1)
    path = tmp_path / "pi.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError, match="simd is detected on this host"):
        load_profile(str(path))


@pytest.mark.parametrize("compressed_ms, slower", [(0.6, False), (1.01, False), (1.2, True)])
def test_versus_original_says_slower_only_when_every_round_is(tmp_path, compressed_ms, slower):
    from edgecomp.pipeline.versus_original import versus_original

    calls = []

    def time_onnx(path):
        calls.append(path.name)
        return (compressed_ms if path.name == "c.onnx" else 1.0) * (1 + 0.1 * len(calls))  # drifting

    result = versus_original(time_onnx, tmp_path / "o.onnx", tmp_path / "c.onnx")
    assert len(calls) == 2 * ctx.ROUNDS and result["slower"] is slower
    assert ("SLOWER" in result["message"]) is slower and f"{result['ratio']:.3f}x" in result["message"]


def test_a_noisy_round_below_one_is_not_called_slower(tmp_path):
    from edgecomp.pipeline.versus_original import versus_original

    ratios = iter([1.2, 1.2, 0.95, 1.2, 1.2])
    pending = {}

    def time_onnx(path):
        if path.name == "o.onnx":
            return 1.0
        pending["r"] = next(ratios)
        return pending["r"]

    result = versus_original(time_onnx, tmp_path / "o.onnx", tmp_path / "c.onnx")
    assert result["ratio"] == pytest.approx(1.2) and result["slower"] is False


def test_without_cpu_flags_the_width_is_the_architectures_baseline(tmp_path):
    import platform

    from edgecomp.latency.keys import host_simd_lanes

    lanes, why = host_simd_lanes(str(tmp_path / "missing"))
    expected = 4 if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64") else 1
    assert lanes == expected and why


def test_export_refuses_simd_for_a_target_other_than_this_host(tmp_path):
    from edgecomp.errors import UserInputError
    from edgecomp.pipeline import ExportRequest
    from edgecomp.profiles import load_profile

    request = ExportRequest(profile=load_profile("x86-host"), outdir=str(tmp_path / "out"),
                            target="ssh://user@127.0.0.1:1")
    with pytest.raises(UserInputError, match="--rank-multiple N for that machine"):
        request.resolved()
    ExportRequest(profile=load_profile("x86-host"), outdir=str(tmp_path / "out"), target="ssh://user@127.0.0.1:1",
                  rank_multiple=1).resolved()  # an explicit multiple is the user's choice


def test_a_bad_layer_timing_or_rank_multiple_is_one_clear_user_error(tmp_path):
    from edgecomp.errors import UserInputError
    from edgecomp.pipeline import ExportRequest
    from edgecomp.profiles import load_profile, validate_profile_data

    with pytest.raises(UserInputError, match="--layer-timing must be one of auto, isolated, in-context, got 'fast'"):
        ExportRequest(profile=load_profile("x86-host"), outdir=str(tmp_path / "out"), layer_timing="fast").resolved()
    data = load_profile("x86-host").to_dict()
    data["runtime"]["rank_multiple"] = {"fp32": "sse"}
    with pytest.raises(UserInputError, match="rank_multiple"):
        validate_profile_data(data, "host.yaml")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_cli_refuses_an_unknown_layer_timing_with_exit_2(tmp_path):
    from click.testing import CliRunner

    from edgecomp.cli import main

    result = CliRunner().invoke(main, ["export", "--device", "x86-host", "--layer-timing", "fast", "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2 and "--layer-timing" in result.output and not (tmp_path / "out").exists()
