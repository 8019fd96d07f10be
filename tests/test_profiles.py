"""Device profiles: shipped files, schema errors, budget parsing and resolution, `edgecomp devices`."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from edgecomp.errors import UserInputError
from edgecomp.profiles import (
    PROFILE_SCHEMA,
    DeviceProfile,
    list_profiles,
    load_profile,
    parse_mac_budget,
    parse_memory_budget,
    profiles_dir,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"jetson-orin-nano", "jetson-agx-orin", "jetson-nano", "raspberry-pi-5", "raspberry-pi-zero-2w", "pixel-8", "x86-host"}

MINIMAL = {
    "name": "toy",
    "runtime": {"kind": "onnxruntime"},
    "precisions": ["fp32", "int8"],
    "default_precision": "fp32",
    "compute": {"peak_macs_per_s": {"fp32": 1.0e11, "int8": 4.0e11}, "efficiency": 0.5},
    "budgets": {"latency_ms": 10},
    "target": {"transport": "local"},
}


def write_profile(directory: Path, data: dict | str, name: str = "toy.yaml") -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_changes(**changes) -> dict:
    data = json.loads(json.dumps(MINIMAL))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return data


# ---- shipped profiles ---------------------------------------------------------------------------
def test_profiles_dir_is_repo_device_profiles(monkeypatch):
    monkeypatch.delenv("EDGECOMP_PROFILES_DIR", raising=False)
    assert profiles_dir().resolve() == (REPO / "device_profiles").resolve()


def test_every_shipped_profile_loads_and_is_consistent():
    profiles = list_profiles()
    assert SHIPPED <= {p.name for p in profiles}
    for p in profiles:
        jsonschema.validate(p.to_dict(), PROFILE_SCHEMA)
        assert p.default_precision in p.precisions
        assert set(p.precisions) <= set(p.peak_macs_per_s)
        assert 0 < p.efficiency <= 1
        assert p.latency_budget_ms is not None and p.latency_budget_ms > 0
        assert p.latency_percentile == 90
        assert p.runtime in ("tensorrt", "onnxruntime")
        assert p.target.transport in ("local", "ssh", "adb")
        assert p.source is not None and p.source.stem == p.name
        # every peak number comes with its derivation in a comment
        assert p.source.read_text().count("#") >= len(p.precisions)
        # round trip through the YAML structure
        assert DeviceProfile.from_dict(p.to_dict(), p.source) == p


def test_shipped_profile_details():
    orin = load_profile("jetson")
    assert orin.name == "jetson-orin-nano" and orin.runtime == "tensorrt"
    assert orin.peak_macs_per_s["int8"] == pytest.approx(10.24e12)  # 40 sparse TOPS / 2 / 2
    assert orin.peak_macs_per_s["fp16"] == pytest.approx(orin.peak_macs_per_s["int8"] / 2)
    assert orin.target.transport == "ssh" and orin.target.url.startswith("ssh://")
    pi = load_profile("raspberry-pi-5")
    assert pi.peak_macs_per_s["fp32"] == pytest.approx(4 * 2.4e9 * 8)
    pixel = load_profile("pixel-8")
    assert pixel.target.transport == "adb"
    assert pixel.execution_providers[:2] == ("NnapiExecutionProvider", "XnnpackExecutionProvider")
    host = load_profile("x86-host")
    assert host.target.transport == "local" and host.target.url is None
    assert host.execution_providers == ("CPUExecutionProvider",)
    assert load_profile("jetson-nano").precisions == ("fp32", "fp16")


def test_lookup_by_alias_case_and_path():
    assert load_profile("JETSON").name == "jetson-orin-nano"
    assert load_profile("rpi5").name == "raspberry-pi-5"
    path = REPO / "device_profiles" / "pixel-8.yaml"
    assert load_profile(str(path)).name == "pixel-8"


def test_unknown_name_lists_available():
    with pytest.raises(UserInputError) as info:
        load_profile("jetson-thor")
    message = str(info.value)
    assert "jetson-thor" in message
    for name in SHIPPED:
        assert name in message


# ---- broken profiles ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"budgets__latency_ms": -1}, "budgets.latency_ms: -1 is less than the minimum of 0"),
        ({"budgets__latency_ms": "fast"}, "budgets.latency_ms: 'fast' is not of type 'number', 'null'"),
        ({"runtime": ...}, "runtime: missing required field"),
        ({"runtime__kind": "tflite"}, "runtime.kind: 'tflite' is not one of ['tensorrt', 'onnxruntime']"),
        ({"compute__efficiency": 1.5}, "compute.efficiency: 1.5 is greater than the maximum of 1"),
        ({"precisions": ["fp32", "bf16"]}, "precisions.1: 'bf16' is not one of"),
        ({"budgets__latncy_ms": 5}, "budgets.latncy_ms: unknown field"),
        ({"runtime__threads": 0}, "runtime.threads: 0 is less than the minimum of 1"),
        ({"runtime__execution_providers": ["CPU"]}, "runtime.execution_providers.0: 'CPU' is not a valid name: use ONNX Runtime provider names"),
        ({"default_precision": "int8", "precisions": ["fp32"]}, "default_precision: 'int8' is not one of precisions"),
        ({"precisions": ["fp32", "fp16"]}, "compute.peak_macs_per_s.fp16: missing"),
        ({"target__transport": "ssh"}, "target.url: an ssh target needs a URL"),
        ({"target__url": "ssh://x@y"}, "target.url: a local target takes no URL"),
        ({"budgets__mac_budget": 0.5}, "budgets.mac_budget: 0.5 looks like a fraction"),
        ({"budgets__memory_budget": "lots"}, "budgets.memory_budget: cannot parse"),
        ({"budgets__latency_ms": 0}, "budgets.latency_ms: must be positive"),
        ({"aliases": ["Jetson"]}, "aliases.0: 'Jetson' is not a valid name: use lowercase"),
    ],
)
def test_broken_profile_names_file_and_field(tmp_path, monkeypatch, changes, expected):
    monkeypatch.chdir(tmp_path)
    path = write_profile(tmp_path, with_changes(**changes))
    with pytest.raises(UserInputError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert message.startswith("toy.yaml: "), message
    assert expected in message


def test_missing_top_level_field_and_several_errors(tmp_path):
    data = with_changes(name=..., budgets__latency_ms=-3)
    path = write_profile(tmp_path, data)
    with pytest.raises(UserInputError) as info:
        load_profile(str(path))
    lines = str(info.value).splitlines()
    assert any(line.endswith("name: missing required field") for line in lines)
    assert any("budgets.latency_ms: -3 is less than the minimum of 0" in line for line in lines)
    assert all(line.startswith(str(path)) or line.startswith("toy.yaml") for line in lines)


def test_invalid_yaml_and_duplicate_keys(tmp_path):
    bad = write_profile(tmp_path, "name: [unclosed\n", "bad.yaml")
    with pytest.raises(UserInputError, match="invalid YAML"):
        load_profile(str(bad))
    dup = write_profile(tmp_path, "name: a\nname: b\n", "dup.yaml")
    with pytest.raises(UserInputError, match="duplicate key 'name'"):
        load_profile(str(dup))
    scalar = write_profile(tmp_path, "just a string\n", "scalar.yaml")
    with pytest.raises(UserInputError, match="must be a YAML mapping"):
        load_profile(str(scalar))
    with pytest.raises(UserInputError, match="not found"):
        load_profile(str(tmp_path / "missing.yaml"))


def test_yaml12_floats_and_string_budgets(tmp_path):
    text = textwrap.dedent(
        """
        name: toy
        runtime: {kind: onnxruntime}
        precisions: [fp32]
        default_precision: fp32
        compute:
          peak_macs_per_s: {fp32: 2e11}   # YAML 1.1 would read this as a string
          efficiency: 0.25
        budgets: {latency_ms: null, mac_budget: 30M, memory_budget: 2MiB}
        target: {transport: adb, url: emulator-5554}
        """
    )
    p = load_profile(str(write_profile(tmp_path, text)))
    assert p.peak_macs_per_s == {"fp32": 2e11}
    assert p.mac_budget == 30e6 and p.memory_budget_bytes == 2 * 1024**2
    assert p.execution_providers == ("CPUExecutionProvider",)  # default for onnxruntime
    assert p.threads is None and p.graph_optimization_level == "all"
    assert p.target.python == "python3" and p.target.workdir == "/tmp/edgecomp"
    assert p.latency_percentile == 90


def test_env_dir_names_and_alias_collisions(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMP_PROFILES_DIR", str(tmp_path))
    write_profile(tmp_path, with_changes(name="alpha", aliases=["a"]), "alpha.yaml")
    write_profile(tmp_path, with_changes(name="beta", aliases=["b"]), "beta.yaml")
    assert profiles_dir() == tmp_path
    assert [p.name for p in list_profiles()] == ["alpha", "beta"]
    assert load_profile("b").name == "beta"
    write_profile(tmp_path, with_changes(name="gamma", aliases=["a"]), "gamma.yaml")
    with pytest.raises(UserInputError, match="used by both"):
        list_profiles()
    # a broken unrelated profile does not block lookup by file name, and is mentioned when not found
    write_profile(tmp_path, with_changes(runtime__kind="tflite"), "zeta.yaml")
    assert load_profile("beta").name == "beta"
    with pytest.raises(UserInputError, match="could not read: .*zeta.yaml"):
        load_profile("nothing")


# ---- budget parsing ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5", 50e6),
        ("50%", 50e6),
        ("1", 100e6),
        (" 0.25 ", 25e6),
        ("30M", 30e6),
        ("30m", 30e6),
        ("1.2G", 1.2e9),
        ("500K", 500e3),
        ("2T", 2e12),
        ("2e9", 2e9),
        ("4000000", 4e6),
        ("1.5", 1.5),
    ],
)
def test_parse_mac_budget(text, expected):
    assert parse_mac_budget(text, 100e6) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "abc", "0", "-1", "-0.5", "30X", "1.2.3", "nan", "inf", "150%", "0%", "30MB", "1e"])
def test_parse_mac_budget_rejects_junk(text):
    with pytest.raises(UserInputError, match="MAC budget"):
        parse_mac_budget(text, 100e6)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5", 2e6),
        ("25%", 1e6),
        ("2MB", 2e6),
        ("2MiB", 2 * 1024**2),
        ("2M", 2e6),
        ("512KB", 512e3),
        ("512kib", 512 * 1024),
        ("1GB", 1e9),
        ("1GiB", 1024**3),
        ("123456", 123456),
        ("123456B", 123456),
        ("1.5 MB", 1.5e6),
    ],
)
def test_parse_memory_budget(text, expected):
    assert parse_memory_budget(text, 4e6) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "lots", "0", "0MB", "-2MB", "-0.5", "2XB", "MB", "2 M B", "nan"])
def test_parse_memory_budget_rejects_junk(text):
    with pytest.raises(UserInputError, match="memory budget"):
        parse_memory_budget(text, 4e6)


def test_fraction_needs_original_size():
    with pytest.raises(UserInputError, match="original"):
        parse_mac_budget("0.5", 0)
    assert parse_mac_budget("30M", 0) == 30e6  # absolute needs no original


# ---- derived numbers and budget resolution -----------------------------------------------------------
def toy(tmp_path, **changes) -> DeviceProfile:
    return load_profile(str(write_profile(tmp_path, with_changes(**changes))))


def test_effective_rate_and_bytes_per_param(tmp_path):
    p = toy(tmp_path)
    assert p.effective_macs_per_s() == pytest.approx(0.5e11)
    assert p.effective_macs_per_s("int8") == pytest.approx(2e11)
    assert p.bytes_per_param() == 4 and p.bytes_per_param("int8") == 1
    with pytest.raises(UserInputError, match="does not support precision 'fp16'"):
        p.effective_macs_per_s("fp16")


def test_resolve_budgets_rules(tmp_path):
    p = toy(tmp_path)  # latency 10 ms, fp32 100 GMAC/s x 0.5, no memory budget
    b = p.resolve_budgets(1e9, 4e6)
    assert b.macs == pytest.approx(10e-3 * 0.5e11)
    assert b.mac_source == "derived from latency 10 ms x 5.0e10 MAC/s"
    assert math.isinf(b.memory_bytes) and b.memory_source == "none"

    b = p.resolve_budgets(1e9, 4e6, mac_override="0.5", memory_override="1MB")
    assert (b.macs, b.mac_source) == (0.5e9, "--mac-budget 0.5")
    assert (b.memory_bytes, b.memory_source) == (1e6, "--memory-budget 1MB")

    p = toy(tmp_path, budgets={"latency_ms": 10, "mac_budget": "20M", "memory_budget": "3MB"})
    b = p.resolve_budgets(1e9, 4e6)
    assert (b.macs, b.mac_source, b.memory_bytes, b.memory_source) == (20e6, "profile", 3e6, "profile")
    b = p.resolve_budgets(1e9, 4e6, mac_override="100M", memory_override="0.5")
    assert (b.macs, b.memory_bytes) == (100e6, 2e6)

    p = toy(tmp_path, budgets={"latency_ms": None})
    b = p.resolve_budgets(1e9, 4e6)
    assert math.isinf(b.macs) and b.mac_source == "none"

    with pytest.raises(UserInputError):
        p.resolve_budgets(1e9, 4e6, mac_override="half")


# ---- CLI ----------------------------------------------------------------------------------------------
@pytest.fixture()
def cli():
    from edgecomp.cli import main

    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def test_devices_table(cli):
    result = cli("devices")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0]
    assert header.split()[:3] == ["NAME", "ALIASES", "RUNTIME"]
    assert "TRANSPORT" in header and "MAC BUDGET" in header and "MEMORY" in header
    rows = {line.split()[0]: line for line in lines[1:]}
    assert SHIPPED <= set(rows)
    col = header.index("RUNTIME")
    for line in lines[1:]:
        assert line[col:].split()[0] in ("tensorrt", "onnxruntime")  # aligned columns
    assert "jetson, orin-nano" in rows["jetson-orin-nano"]
    assert "16 MB" in rows["raspberry-pi-5"] and rows["x86-host"].rstrip().endswith("local")


def test_devices_json(cli):
    result = cli("devices", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert SHIPPED <= set(rows)
    pi = rows["raspberry-pi-5"]
    assert pi["memory_budget_bytes"] == 16e6 and pi["transport"] == "ssh"
    assert pi["derived_mac_budget"] == pytest.approx(20e-3 * 76.8e9 * 0.3)


def test_devices_show(cli):
    result = cli("devices", "show", "jetson")
    assert result.exit_code == 0, result.output
    assert "jetson-orin-nano" in result.output
    assert "5 ms x 1.5e12 MAC/s (fp16)" in result.output
    assert "ssh://nvidia@jetson.local" in result.output

    result = cli("devices", "show", "pixel-8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["name"] == "pixel-8" and data["target"]["transport"] == "adb"
    assert data["effective_macs_per_s"]["fp32"] == pytest.approx(103.4e9 * 0.25)
    assert data["derived_mac_budget"] == pytest.approx(10e-3 * 103.4e9 * 0.25)

    result = cli("devices", "show", "nope")  # the real group: one error line naming the known devices, exit 2
    assert result.exit_code == 2
    assert "error:" in result.output and "x86-host" in result.output and "Traceback" not in result.output
