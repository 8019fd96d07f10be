"""The device profile as typed, immutable data, and how its budgets resolve for a given model.

Budget resolution (`DeviceProfile.resolve_budgets`), for a model of N_C,0 MACs and M_0 weight bytes:

    MACs:   --mac-budget override (fraction of N_C,0 or absolute)
            else the profile's absolute mac_budget
            else derived from latency:  N_C,max = latency_ms * 1e-3 * peak[p] * efficiency
                 (p = default precision; the achievable MAC rate times the time allowed)
            else no MAC budget (inf)
    memory: --memory-budget override, else the profile's memory_budget, else none (inf)

`Budgets` is the one type of resolved budgets (compress, export and inspect all use it). Bytes per
parameter come from the cost model (edgecomp.graph.cost.BYTES_PER_PARAM), imported where needed so
that reading a profile does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecomp.errors import UserInputError
from edgecomp.profiles.units import format_sci, parse_bytes, parse_count, parse_mac_budget, parse_memory_budget

SIMD = "simd"  # runtime.rank_multiple: the fp32 SIMD width of the host that runs the model (local targets)


def _bytes_per_param(precision: str) -> int:
    from edgecomp.graph.cost import BYTES_PER_PARAM

    return BYTES_PER_PARAM[precision]


@dataclass(frozen=True)
class TargetSpec:
    """Where measurements run: this machine, a host over ssh, or an Android device over adb."""

    transport: str  # "local" | "ssh" | "adb"
    url: str | None  # ssh://user@host[:port], an adb serial (None = the only attached device), None for local
    python: str = "python3"
    workdir: str = "/tmp/edgecomp"


@dataclass(frozen=True)
class Budgets:
    """Absolute budgets for one model on one device (+inf: none), the precision that converts the
    memory budget to parameters, and where each number came from."""

    macs: float  # MACs per sample
    memory_bytes: float  # weight bytes
    precision: str  # fp32 | fp16 | int8
    mac_source: str = ""
    memory_source: str = ""

    @property
    def params(self) -> float:
        """The memory budget in parameters: memory_bytes / bytes per parameter at `precision`."""
        return self.memory_bytes / _bytes_per_param(self.precision)


@dataclass(frozen=True)
class DeviceProfile:
    """One device: runtime, precisions, MAC rates, budgets and how to reach it (see device_profiles/)."""

    name: str
    aliases: tuple[str, ...]
    description: str
    runtime: str  # "tensorrt" | "onnxruntime"
    execution_providers: tuple[str, ...]
    threads: int | None
    graph_optimization_level: str  # all | extended | basic | disabled
    precisions: tuple[str, ...]
    default_precision: str
    peak_macs_per_s: dict[str, float]
    efficiency: float
    latency_budget_ms: float | None
    latency_percentile: float
    mac_budget: float | None
    memory_budget_bytes: float | None
    target: TargetSpec
    source: Path | None = field(default=None, compare=False)
    # precision -> the rank multiple its runtime runs fastest (runtime.rank_multiple; absent: no rounding)
    rank_multiples: dict[str, int | str] = field(default_factory=dict)  # an int, or SIMD (detected on the host)

    def __hash__(self) -> int:  # the dict field is unhashable; equal profiles share a name
        return hash(self.name)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, source: Path | None = None) -> "DeviceProfile":
        """Build from profile data already validated by `schema.validate_profile_data`."""
        runtime = data["runtime"]
        compute = data["compute"]
        budgets = data.get("budgets") or {}
        target = data["target"]
        eps = runtime.get("execution_providers")
        if eps is None:
            eps = ["CPUExecutionProvider"] if runtime["kind"] == "onnxruntime" else []
        mac_budget = budgets.get("mac_budget")
        memory_budget = budgets.get("memory_budget")
        multiple = runtime.get("rank_multiple")
        if isinstance(multiple, dict):
            multiples = {k: v if v == SIMD else int(v) for k, v in multiple.items()}
        else:
            multiples = {} if multiple is None else {p: multiple if multiple == SIMD else int(multiple)
                                                     for p in data["precisions"]}
        return cls(
            name=data["name"],
            aliases=tuple(data.get("aliases") or ()),
            description=(data.get("description") or "").strip(),
            runtime=runtime["kind"],
            execution_providers=tuple(eps),
            threads=runtime.get("threads"),
            graph_optimization_level=runtime.get("graph_optimization_level", "all"),
            precisions=tuple(data["precisions"]),
            default_precision=data["default_precision"],
            peak_macs_per_s={k: float(v) for k, v in compute["peak_macs_per_s"].items()},
            efficiency=float(compute["efficiency"]),
            latency_budget_ms=None if budgets.get("latency_ms") is None else float(budgets["latency_ms"]),
            latency_percentile=float(budgets.get("percentile", 90.0)),
            mac_budget=None if mac_budget is None else parse_count(str(mac_budget), "budgets.mac_budget"),
            memory_budget_bytes=(
                None if memory_budget is None else parse_bytes(str(memory_budget), "budgets.memory_budget")
            ),
            target=TargetSpec(
                transport=target["transport"],
                url=target.get("url"),
                python=target.get("python", "python3"),
                workdir=target.get("workdir", "/tmp/edgecomp"),
            ),
            source=source,
            rank_multiples=multiples,
        )

    # ---- derived numbers ----------------------------------------------------------------
    def check_precision(self, precision: str | None, option: str = "--precision") -> str:
        """`precision` (default: the device's) if the device lists it; else UserInputError.
        compress, convert and export all check a requested precision here."""
        precision = precision or self.default_precision
        if precision not in self.precisions:
            raise UserInputError(
                f"device {self.name!r} does not support precision {precision!r} (it supports "
                f"{', '.join(self.precisions)}): choose one of those with {option}"
            )
        return precision

    def _precision(self, precision: str | None) -> str:
        return self.check_precision(precision)

    def effective_macs_per_s(self, precision: str | None = None) -> float:
        """Achievable MAC rate: peak[precision] * efficiency."""
        return self.peak_macs_per_s[self._precision(precision)] * self.efficiency

    def rank_multiple(self, precision: str | None = None) -> int:
        """The multiple factored ranks are rounded down to at `precision` (default: the device's); 1: none.
        "simd" in the profile: this host's fp32 SIMD width (edgecomp.latency.keys.host_simd_lanes)."""
        value = self.rank_multiples.get(self._precision(precision), 1)
        if value == SIMD:
            from edgecomp.latency.keys import host_simd_lanes

            return host_simd_lanes()[0]
        return int(value)

    def rank_multiple_source(self, precision: str | None = None) -> str:
        """Where `rank_multiple` comes from, for a report: the profile, and for "simd" what was detected."""
        where = f"profile {self.name} ({self.runtime}, {precision or self.default_precision})"
        if self.rank_multiples.get(self._precision(precision)) == SIMD:
            from edgecomp.latency.keys import host_simd_lanes

            lanes, isa = host_simd_lanes()
            return f"{where}: simd = {lanes} fp32 lanes ({isa} on this host)"
        return where

    def bytes_per_param(self, precision: str | None = None) -> int:
        """Weight storage per parameter: fp32 4, fp16 2, int8 1."""
        return _bytes_per_param(self._precision(precision))

    def derived_mac_budget(self, precision: str | None = None) -> float | None:
        """latency_ms * 1e-3 * effective_macs_per_s, or None without a latency budget."""
        if self.latency_budget_ms is None:
            return None
        return self.latency_budget_ms * 1e-3 * self.effective_macs_per_s(precision)

    def resolve_budgets(
        self,
        original_macs: float,
        original_bytes: float,
        mac_override: str | None = None,
        memory_override: str | None = None,
        precision: str | None = None,
    ) -> Budgets:
        """Absolute budgets for a model of `original_macs` MACs and `original_bytes` weight bytes (at
        `precision`, default the profile's default precision, which the budgets record)."""
        precision = self._precision(precision)
        if mac_override is not None:
            macs, mac_source = parse_mac_budget(mac_override, original_macs), f"--mac-budget {mac_override}"
        elif self.mac_budget is not None:
            macs, mac_source = self.mac_budget, "profile"
        elif self.latency_budget_ms is not None:
            rate = self.effective_macs_per_s()
            macs = self.latency_budget_ms * 1e-3 * rate
            mac_source = f"derived from latency {self.latency_budget_ms:g} ms x {format_sci(rate)} MAC/s"
        else:
            macs, mac_source = math.inf, "none"

        if memory_override is not None:
            memory = parse_memory_budget(memory_override, original_bytes)
            memory_source = f"--memory-budget {memory_override}"
        elif self.memory_budget_bytes is not None:
            memory, memory_source = self.memory_budget_bytes, "profile"
        else:
            memory, memory_source = math.inf, "none"
        return Budgets(macs=float(macs), memory_bytes=float(memory), precision=precision, mac_source=mac_source,
                       memory_source=memory_source)

    def to_dict(self) -> dict[str, Any]:
        """The profile in the YAML file's structure (valid against PROFILE_SCHEMA; `source` excluded)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "runtime": {
                "kind": self.runtime,
                "execution_providers": list(self.execution_providers),
                "threads": self.threads,
                "graph_optimization_level": self.graph_optimization_level,
                # only when set, so profiles without one keep their fingerprints (edgecomp.pipeline stages)
                **({"rank_multiple": dict(self.rank_multiples)} if self.rank_multiples else {}),
            },
            "precisions": list(self.precisions),
            "default_precision": self.default_precision,
            "compute": {"peak_macs_per_s": dict(self.peak_macs_per_s), "efficiency": self.efficiency},
            "budgets": {
                "latency_ms": self.latency_budget_ms,
                "percentile": self.latency_percentile,
                "mac_budget": self.mac_budget,
                "memory_budget": self.memory_budget_bytes,
            },
            "target": {
                "transport": self.target.transport,
                "url": self.target.url,
                "python": self.target.python,
                "workdir": self.target.workdir,
            },
        }
