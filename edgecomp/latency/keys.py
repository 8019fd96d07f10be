"""What a per-layer latency measurement depends on: the key of its cache entry.

A key is a plain JSON object with five parts:

* where:   the machine that really ran it. A remote board: its transport and address from the target
           URL (ssh host and port, adb serial) plus what its agent reported (node name, machine, processor,
           a hash of the CPU flags). This host (a local target, or a stand-in for a device): the host's
           node name, machine, CPU model and CPU-flags hash -- never the device profile's name, since a
           host timing says nothing about the device it stands in for.
* runtime: the runtime and version, execution providers, graph optimization level, precision, threads
           and batch, as the runtime itself reported them when it timed the whole model in the same run.
* layer:   kind, in/out channels, kernel, stride, padding, dilation, groups, bias and the input shape.
* scheme:  the factored form ("spatial", "channel", "linear", "cp"); "dense" for the original layer.
* rank:    the factored rank; "dense" for the original layer.

Two measurements share an entry exactly when every part is equal (`key_digest` hashes the canonical JSON).
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

DENSE = "dense"
KEY_VERSION = 1  # bump when a key part changes meaning: every older entry then misses


def _flags_digest(flags) -> str | None:
    if flags is None:
        return None
    return hashlib.sha256(" ".join(sorted(str(f) for f in flags)).encode()).hexdigest()[:16]


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, list[str] | None]:
    """(CPU model, flags) of the first processor in /proc/cpuinfo; (None, None) without it."""
    model = flags = None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                key = key.strip().lower()
                if not sep:
                    if model or flags:
                        break  # the end of the first processor's block
                    continue
                if key in ("model name", "hardware", "cpu model") and model is None:
                    model = value.strip()
                elif key in ("flags", "features") and flags is None:
                    flags = value.lower().split()
    except OSError:
        pass
    return model, flags


def host_identity() -> dict[str, Any]:
    """This host: node name, machine, CPU model and a hash of its CPU flags."""
    model, flags = _cpuinfo()
    return {"node": platform.node(), "machine": platform.machine(), "cpu_model": model or platform.processor(),
            "cpu_flags": _flags_digest(flags)}


def host_simd_lanes(path: str = "/proc/cpuinfo") -> tuple[int, str]:
    """(fp32 lanes of this host's widest vector unit, its name): 16 with AVX-512F, 8 with AVX/AVX2, 4 with
    NEON or SSE2; (1, ...) when the CPU flags say none. ONNX Runtime's CPU kernels block channels by it (MLAS
    NCHWc convolutions use 16 channels with AVX-512F and 8 with AVX2), so a factored rank off that multiple
    pads or falls back to slower kernels (BENCHMARKS.md, "Hardware-friendly ranks")."""
    _, flags = _cpuinfo(path)
    have = set(flags or ())
    for flag, lanes, name in (("avx512f", 16, "AVX-512F"), ("avx2", 8, "AVX2"), ("avx", 8, "AVX"),
                              ("asimd", 4, "NEON"), ("neon", 4, "NEON"), ("sse2", 4, "SSE2")):
        if flag in have:
            return lanes, name
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return 4, "NEON (aarch64)"
    if machine in ("x86_64", "amd64"):
        return 4, "SSE2 (the x86-64 baseline; no CPU flags read)"
    return 1, "no SIMD flags found"


def measured_where(target_url: str, environment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `where` part of a key for a run on `target_url`; `environment`: what the agent reported there."""
    if target_url == "local":
        return {"transport": "local", **host_identity()}
    env = environment or {}
    board = {"node": env.get("node"), "machine": env.get("machine"), "processor": env.get("processor"),
             "cpu_flags": _flags_digest(env.get("cpu_flags"))}
    parts = urlsplit(target_url)
    if parts.scheme == "ssh":
        return {"transport": "ssh", "host": parts.hostname, "port": parts.port, **board}
    return {"transport": parts.scheme or target_url, "address": parts.netloc + parts.path or None, **board}


@dataclass(frozen=True)
class MeasurementContext:
    """Where and how every layer of one latency table is timed (the `where` and `runtime` parts of a key)."""

    where: dict
    runtime: str
    runtime_version: str
    providers: tuple[str, ...]
    graph_optimization_level: str | None
    precision: str
    threads: int | None
    batch: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "providers": list(self.providers)}


def layer_shape(layer) -> dict[str, Any]:
    """The `layer` part of a key from an edgecomp.graph.trace.LayerInfo (its first call's input shape)."""
    return {"kind": layer.kind, "in_channels": int(layer.in_channels), "out_channels": int(layer.out_channels),
            "kernel": list(layer.kernel_size), "stride": list(layer.stride), "padding": list(layer.padding),
            "dilation": list(layer.dilation), "groups": int(layer.groups), "bias": bool(layer.bias),
            "input": [int(d) for d in layer.in_shape]}


def entry_key(context: MeasurementContext, shape: Mapping[str, Any], scheme: str, rank: int | str) -> dict[str, Any]:
    """The full key of one measurement: `scheme` and `rank` are DENSE for the original layer."""
    if (scheme == DENSE) != (rank == DENSE):
        raise ValueError(f"the dense layer has scheme and rank {DENSE!r}; got scheme {scheme!r}, rank {rank!r}")
    runtime = {k: v for k, v in context.to_dict().items() if k != "where"}
    return {"version": KEY_VERSION, "where": dict(context.where), "runtime": runtime, "layer": dict(shape),
            "scheme": scheme, "rank": rank if rank == DENSE else int(rank)}


def key_digest(key: Mapping[str, Any]) -> str:
    """sha256 (hex) of the key's canonical JSON: the entry's file name."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
